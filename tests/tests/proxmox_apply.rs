//! End to end: the real `mms-build` binary against the Proxmox simulator,
//! non-interactively (stdin is not a TTY), secrets from `MMS_SECRET_*`.

use mms_tests::pve_sim::harness::{
    self, HASH_A, HASH_B, SECRETS, assert_no_secrets, run_mms_build, sim_with_template, site_dir,
};
use mms_tests::pve_sim::{SimConfig, state::SECRETS_COMPLETE};

fn token() -> String {
    SimConfig::default().token_secret
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn full_apply_from_nothing_then_noop_reapply() {
    let sim = sim_with_template(SimConfig::default());
    let site = site_dir(&sim, HASH_A);
    let cfg = site.config.to_str().unwrap();
    let bundle = site.bundle.to_str().unwrap();

    // The plan first: read-only, secrets as (secret).
    let out = run_mms_build(&["--config", cfg, "--bundle", bundle], &token());
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("full clone of the template as mms-next"),
        "{all}"
    );
    assert!(all.contains("tailscale_auth_key=(secret)"), "{all}");
    assert_no_secrets(&all);
    assert!(
        sim.requests().iter().all(|r| r.method == "GET"),
        "plan wrote: {:?}",
        sim.requests()
    );

    let out = run_mms_build(&["--apply", "--config", cfg, "--bundle", bundle], &token());
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("done: VM 100 (mms) serves bundle 0123456789abcdef"),
        "{all}"
    );
    assert_no_secrets(&all);
    {
        let st = sim.state();
        let ours = st.vms_tagged("mms");
        assert_eq!(ours.len(), 1, "exactly one VM: {ours:?}");
        let vm = ours[0];
        assert_eq!(vm.name(), "mms");
        assert!(vm.running);
        assert_eq!(vm.config["tags"], "mms;mms-0123456789abcdef");
        assert_eq!(vm.config["cores"], "4");
        assert_eq!(vm.config["memory"], "8192");
        assert_eq!(vm.config["ide2"], "none,media=cdrom");
        assert!(
            vm.config["scsi0"].ends_with("size=64G"),
            "{}",
            vm.config["scsi0"]
        );
        assert!(vm.config["description"].starts_with("mms-build bundle"));
        for (name, value) in SECRETS {
            assert_eq!(vm.files[&format!("/etc/mms/secrets/{name}")], *value);
        }
        assert!(vm.files.contains_key(SECRETS_COMPLETE));
        assert!(
            !vm.files
                .contains_key("/etc/mms/secrets/proxmox_token_secret")
        );
        assert!(
            st.volumes.keys().all(|v| !v.starts_with("local:iso/")),
            "seed ISO left: {:?}",
            st.volumes.keys()
        );
    }

    // Re-apply: nothing to do, a handful of GETs.
    sim.clear_requests();
    let out = run_mms_build(&["apply", "--config", cfg, "--bundle", bundle], &token());
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("up to date"), "{all}");
    let reqs = sim.requests();
    assert!(reqs.iter().all(|r| r.method == "GET"), "{reqs:?}");
    assert!(
        reqs.len() <= 6,
        "no-op apply made {} requests: {reqs:?}",
        reqs.len()
    );

    // --json plan: up to date.
    let out = run_mms_build(
        &["plan", "--json", "--config", cfg, "--bundle", bundle],
        &token(),
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan --json");
    assert_eq!(doc["up_to_date"], true);
    assert_eq!(doc["secrets"]["immich_db_password"], "(secret)");

    // A changed site: the plan names a rebuild with a key exchange and cut-over.
    harness::write_bundle(&site.bundle, HASH_B);
    let out = run_mms_build(
        &["plan", "--json", "--config", cfg, "--bundle", bundle],
        &token(),
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan --json");
    let steps: Vec<&str> = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["step"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"rebuild-key") && steps.contains(&"cut-over"),
        "{steps:?}"
    );
}

#[test]
fn destroy_needs_yes_without_a_tty() {
    let sim = sim_with_template(SimConfig::default());
    let site = site_dir(&sim, HASH_A);
    let cfg = site.config.to_str().unwrap();
    let out = run_mms_build(
        &[
            "--apply",
            "--config",
            cfg,
            "--bundle",
            site.bundle.to_str().unwrap(),
        ],
        &token(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run_mms_build(&["destroy", "--config", cfg], &token());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("pass --yes"), "{}", text(&out));
    assert_eq!(
        sim.state().vms_tagged("mms").len(),
        1,
        "nothing may be deleted without confirmation"
    );
    let out = run_mms_build(&["destroy", "--yes", "--config", cfg], &token());
    assert!(out.status.success(), "{}", text(&out));
    let st = sim.state();
    assert!(st.vms_tagged("mms").is_empty());
    assert!(
        st.vms.contains_key(&harness::TEMPLATE_VMID),
        "the template stays"
    );
}

#[test]
fn wrong_token_secret_is_an_auth_error_without_the_secret() {
    let sim = sim_with_template(SimConfig::default());
    let site = site_dir(&sim, HASH_A);
    let out = run_mms_build(
        &["status", "--config", site.config.to_str().unwrap()],
        "00000000-wrong-secret-value-000000000000",
    );
    let all = text(&out);
    assert!(!out.status.success());
    assert!(
        all.contains("authentication failed for API token mms@pve!build"),
        "{all}"
    );
    assert!(!all.contains("wrong-secret-value"), "{all}");
}

#[test]
fn a_failure_names_step_reason_and_next_command_without_secrets() {
    let mut cfg = SimConfig::default();
    cfg.privileges.remove("VM.GuestAgent.FileWrite");
    let sim = sim_with_template(cfg);
    let site = site_dir(&sim, HASH_A);
    let out = run_mms_build(
        &[
            "--apply",
            "--config",
            site.config.to_str().unwrap(),
            "--bundle",
            site.bundle.to_str().unwrap(),
            "--agent-timeout",
            "5",
        ],
        &token(),
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("apply failed at step 'secrets'"), "{all}");
    assert!(
        all.contains("Permission check failed (/vms/100, VM.GuestAgent.FileWrite)"),
        "{all}"
    );
    assert!(all.contains("next: grant VM.GuestAgent.FileWrite"), "{all}");
    assert_no_secrets(&all);
}

#[test]
fn apply_renders_in_memory_and_matches_render_out() {
    let sim = sim_with_template(SimConfig::default());
    let site = site_dir(&sim, HASH_A);
    let cfg = site.config.to_str().unwrap();
    let bins = harness::appliance_bin_dir().to_str().unwrap().to_owned();
    // What `render --out` writes is what `--apply` builds (a first build).
    let out_dir = site.dir.path().join("rendered");
    let out = run_mms_build(
        &[
            "render",
            "--config",
            cfg,
            "--appliance-bin",
            &bins,
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &token(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("plan.json")).unwrap()).unwrap();
    let hash16 = &plan["bundle_sha256"].as_str().unwrap()[..16];
    let out = run_mms_build(
        &["--apply", "--config", cfg, "--appliance-bin", &bins],
        &token(),
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains(&format!("serves bundle {hash16}")), "{all}");
    assert_no_secrets(&all);
    {
        let st = sim.state();
        let vm = st.vms_tagged(&format!("mms-{hash16}"));
        assert_eq!(vm.len(), 1);
        let iso_size = std::fs::metadata(out_dir.join("seed.iso")).unwrap().len();
        assert!(
            iso_size > 1 << 20,
            "the seed ISO carries the appliance programs"
        );
    }
    let out = run_mms_build(
        &["apply", "--config", cfg, "--appliance-bin", &bins],
        &token(),
    );
    assert!(text(&out).contains("up to date"), "{}", text(&out));
}

#[test]
fn incomplete_secrets_are_refused_before_any_change() {
    let sim = sim_with_template(SimConfig::default());
    let site = site_dir(&sim, HASH_A);
    let out = std::process::Command::new(harness::mms_build())
        .args(["--apply", "--config"])
        .arg(&site.config)
        .arg("--bundle")
        .arg(&site.bundle)
        .stdin(std::process::Stdio::null())
        .env_remove("MMS_IDENTITY")
        .env("HOME", std::env::temp_dir())
        .env("MMS_SECRET_PROXMOX_TOKEN_SECRET", token())
        .env("MMS_SECRET_IMMICH_DB_PASSWORD", "Passw0rd")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("tailscale_auth_key: missing secret"), "{all}");
    assert!(all.contains("nothing was changed on Proxmox"), "{all}");
    assert!(
        sim.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        sim.requests()
    );
}
