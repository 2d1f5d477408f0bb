//! Apply benchmark (not a timed test): `cargo bench -p mms-tests --bench apply`.
//!
//! Runs `--apply` against the simulator with realistic-shaped task durations
//! (clone, resize, upload, start, guest boot, firstboot phases; scaled ~1/10)
//! and the client's real polling and retry policies, then prints
//!   (a) wall time ÷ the server-side time the flow had to wait for
//!       (sum of task durations + guest boot + firstboot) — target ≤ 1.05;
//!   (b) HTTP requests made by a no-op apply — target ≤ 6.

use mms_builder::apply::flow::{self, ApplyOptions};
use mms_builder::apply::progress::Progress;
use mms_builder::proxmox::{Client, ClientSettings, Trust};
use mms_tests::pve_sim::harness::{HASH_A, HASH_B, inputs, sim_with_template};
use mms_tests::pve_sim::{Durations, PveSim, SimConfig};
use std::time::{Duration, Instant};

fn client(sim: &PveSim) -> Client {
    let cfg = SimConfig::default();
    let s = ClientSettings::new(
        sim.url(),
        &cfg.token_id,
        &cfg.token_secret,
        Trust::Fingerprint(sim.fingerprint()),
    );
    Client::new(&s).expect("client")
}

fn run(sim: &PveSim, hash: &str) -> (Duration, Duration, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let c = client(sim);
    let before = sim.state().server_time;
    let t = Instant::now();
    let report = rt
        .block_on(flow::apply(
            &c,
            &inputs(hash),
            &ApplyOptions::default(),
            &Progress::plain(),
        ))
        .unwrap_or_else(|e| panic!("apply failed: {e}"));
    let wall = t.elapsed();
    assert!(!report.steps.is_empty() || report.up_to_date);
    let server = sim.state().server_time - before;
    (wall, server, c.request_count())
}

fn main() {
    let sim = sim_with_template(SimConfig {
        durations: Durations::realistic(),
        ..SimConfig::default()
    });
    println!("apply benchmark: simulator with realistic-shaped task durations (scaled ~1/10)");
    for (label, hash) in [
        ("first build", HASH_A),
        ("rebuild (old VM present)", HASH_B),
    ] {
        let (wall, server, requests) = run(&sim, hash);
        let ratio = wall.as_secs_f64() / server.as_secs_f64();
        println!(
            "  {label:<26} wall {:>7.3} s, server-side {:>7.3} s, ratio {ratio:.3} (target <= 1.05) {}; {requests} requests",
            wall.as_secs_f64(),
            server.as_secs_f64(),
            if ratio <= 1.05 { "OK" } else { "MISSED" }
        );
    }
    sim.clear_requests();
    let (wall, _, requests) = run(&sim, HASH_B);
    let logged = sim.requests();
    println!(
        "  no-op apply                {requests} requests (target <= 6) {} in {:.3} s: {}",
        if requests <= 6 { "OK" } else { "MISSED" },
        wall.as_secs_f64(),
        logged
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
