//! A fault at every step of a rebuild, then a re-run: the re-run finishes with
//! exactly one new VM, and the old VM keeps serving until the cut-over.

use mms_builder::apply::flow::{self, ApplyError, ApplyReport};
use mms_builder::apply::progress::Progress;
use mms_tests::pve_sim::harness::{HASH_A, client, fast_opts, inputs, rt, sim_with_template};
use mms_tests::pve_sim::{Fault, FaultKind, PveSim, SimConfig};
use std::time::Duration;

const OLD_TAGS: &str = "mms;mms-fedcba9876543210";

fn apply(
    sim: &PveSim,
    opts: &mms_builder::apply::flow::ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let c = client(sim);
    rt().block_on(flow::apply(&c, &inputs(HASH_A), opts, &Progress::plain()))
}

fn assert_final(sim: &PveSim, with_old: bool) {
    let st = sim.state();
    let serving: Vec<_> = st.vms_tagged("mms-0123456789abcdef");
    assert_eq!(serving.len(), 1, "exactly one new VM: {serving:?}");
    assert_eq!(serving[0].name(), "mms");
    assert!(serving[0].running);
    assert!(
        st.vms.values().all(|v| v.name() != "mms-next"),
        "a -next VM is left"
    );
    assert!(
        st.volumes.keys().all(|v| !v.starts_with("local:iso/")),
        "seed ISO left"
    );
    if with_old {
        let old = &st.vms[&100];
        assert_eq!(old.name(), "mms-retired");
        assert!(!old.running);
        assert!(old.tags().contains(&"mms-retired".to_owned()));
        assert_eq!(
            st.vms
                .values()
                .filter(|v| v.tags().contains(&"mms".to_owned()))
                .count(),
            2
        );
    } else {
        assert_eq!(st.vms_tagged("mms").len(), 1);
    }
}

fn assert_old_serving(sim: &PveSim) {
    let st = sim.state();
    let old = st.vms.get(&100).expect("old VM exists");
    assert_eq!(old.name(), "mms", "old VM renamed before cut-over");
    assert!(old.running, "old VM stopped before cut-over");
    assert!(!old.tags().contains(&"mms-retired".to_owned()));
    assert!(
        st.vms.values().filter(|v| v.name() == "mms-next").count() <= 1,
        "two -next VMs"
    );
}

/// Runs a rebuild with `inject` applied, checks the first outcome, clears the
/// faults and re-runs to the end.
fn case(inject: impl FnOnce(&PveSim), expect_step: Option<&str>, old_serving_after_failure: bool) {
    let sim = sim_with_template(SimConfig::default());
    sim.add_appliance(100, "mms", OLD_TAGS);
    inject(&sim);
    let mut opts = fast_opts();
    opts.task_timeout = Duration::from_secs(2);
    opts.agent_timeout = Duration::from_secs(1);
    let first = apply(&sim, &opts);
    match (expect_step, &first) {
        (None, Ok(_)) => {}
        (Some(step), Err(e)) => {
            assert_eq!(e.step, step, "failed at the wrong step: {e}");
            let text = e.to_string();
            assert!(text.contains("next: "), "no next command: {text}");
            if old_serving_after_failure {
                assert_old_serving(&sim);
                assert!(text.contains("the old VM 100 keeps serving"), "{text}");
            }
        }
        (want, got) => panic!("expected failure at {want:?}, got {got:?}"),
    }
    sim.clear_faults();
    let second = apply(&sim, &fast_opts());
    let report = second.unwrap_or_else(|e| panic!("re-run failed: {e}"));
    if old_serving_after_failure && first.is_err() {
        assert_eq!(report.retired, Some(100), "the re-run retires the old VM");
    }
    assert_final(&sim, true);
    // And a third run has nothing to do.
    let third = apply(&sim, &fast_opts()).expect("third run");
    assert!(third.up_to_date, "{third:?}");
}

fn fault(method: &str, path: &str, kind: FaultKind, times: u32) -> Fault {
    Fault::new(method, path, kind, times)
}

#[test]
fn clone_task_fails() {
    case(
        |s| {
            s.inject(fault(
                "POST",
                "/clone",
                FaultKind::FailTask("clone failed: no space left on device".into()),
                1,
            ))
        },
        Some("clone"),
        true,
    );
}

#[test]
fn clone_answer_lost_after_the_clone_started_is_adopted() {
    case(
        |s| s.inject(fault("POST", "/clone", FaultKind::ResetAfter, 1)),
        None,
        true,
    );
}

#[test]
fn clone_connection_keeps_resetting() {
    case(
        |s| s.inject(fault("POST", "/clone", FaultKind::Reset, 100)),
        Some("clone"),
        true,
    );
}

#[test]
fn slow_clone_times_out_then_resumes_waiting_for_the_lock() {
    case(
        |s| {
            s.inject(fault(
                "POST",
                "/clone",
                FaultKind::SlowTask(Duration::from_millis(3500)),
                1,
            ))
        },
        Some("clone"),
        true,
    );
}

#[test]
fn config_lock_contention_is_retried() {
    case(
        |s| s.inject(fault("PUT", "/config", FaultKind::LockTimeout, 1)),
        None,
        true,
    );
}

#[test]
fn configure_lock_timeout_persists() {
    case(
        |s| s.inject(fault("PUT", "/config", FaultKind::LockTimeout, 100)),
        Some("configure"),
        true,
    );
}

#[test]
fn resize_task_fails() {
    case(
        |s| {
            s.inject(fault(
                "PUT",
                "/resize",
                FaultKind::FailTask("disk 'scsi0' does not exist".into()),
                1,
            ))
        },
        Some("resize"),
        true,
    );
}

#[test]
fn upload_gets_5xx() {
    case(
        |s| {
            s.inject(fault(
                "POST",
                "/upload",
                FaultKind::Status(596, "Broken pipe".into()),
                100,
            ))
        },
        Some("upload-iso"),
        true,
    );
}

#[test]
fn upload_connection_reset_once_is_retried() {
    case(
        |s| s.inject(fault("POST", "/upload", FaultKind::Reset, 1)),
        None,
        true,
    );
}

#[test]
fn attach_iso_fails() {
    case(
        |s| s.inject(fault("PUT", "/config", FaultKind::LockTimeout, 100).after(1)),
        Some("attach-iso"),
        true,
    );
}

#[test]
fn start_task_fails() {
    case(
        |s| {
            s.inject(fault(
                "POST",
                "/status/start",
                FaultKind::FailTask("start failed: QEMU exited with code 1".into()),
                1,
            ))
        },
        Some("start"),
        true,
    );
}

#[test]
fn agent_never_comes_up() {
    case(
        |s| s.inject(fault("*", "/agent/", FaultKind::AgentDown, 100_000)),
        Some("wait-agent"),
        true,
    );
}

#[test]
fn secret_delivery_fails() {
    case(
        |s| {
            s.inject(fault(
                "POST",
                "/101/agent/file-write",
                FaultKind::Status(
                    500,
                    "Agent error: Guest agent command failed, error was 'No space left on device'"
                        .into(),
                ),
                100,
            )
            .after(1))
        },
        Some("secrets"),
        true,
    );
}

#[test]
fn firstboot_fails_then_the_failed_vm_is_rebuilt() {
    case(
        |s| s.state().next_firstboot_fail = Some("state".into()),
        Some("firstboot"),
        true,
    );
}

#[test]
fn stopping_the_old_vm_fails_at_cut_over() {
    case(
        |s| {
            s.inject(fault(
                "POST",
                "/100/status/stop",
                FaultKind::FailTask("VM quit/powerdown failed".into()),
                1,
            ))
        },
        Some("cut-over"),
        true,
    );
}

#[test]
fn renaming_fails_at_cut_over() {
    // PUT config calls: configure, attach, retire old, rename new.
    case(
        |s| s.inject(fault("PUT", "/config", FaultKind::LockTimeout, 100).after(3)),
        Some("cut-over"),
        false,
    );
}

#[test]
fn eject_fails() {
    case(
        |s| s.inject(fault("PUT", "/config", FaultKind::LockTimeout, 100).after(4)),
        Some("eject-iso"),
        false,
    );
}

#[test]
fn iso_delete_fails() {
    case(
        |s| {
            s.inject(fault(
                "DELETE",
                "/content/",
                FaultKind::Status(500, "storage 'local' is not online".into()),
                100,
            ))
        },
        Some("delete-iso"),
        false,
    );
}

#[test]
fn listing_vms_gets_transient_5xx() {
    case(
        |s| {
            s.inject(fault(
                "GET",
                "/cluster/resources",
                FaultKind::Status(596, "Broken pipe".into()),
                2,
            ))
        },
        None,
        true,
    );
}

#[test]
fn nextid_connection_reset_is_retried() {
    case(
        |s| s.inject(fault("GET", "/cluster/nextid", FaultKind::Reset, 1)),
        None,
        true,
    );
}

#[test]
fn first_build_with_faults_resumes_too() {
    let sim = sim_with_template(SimConfig::default());
    sim.inject(fault(
        "POST",
        "/status/start",
        FaultKind::FailTask("start failed".into()),
        1,
    ));
    assert_eq!(apply(&sim, &fast_opts()).unwrap_err().step, "start");
    sim.clear_faults();
    apply(&sim, &fast_opts()).expect("re-run");
    assert_final(&sim, false);
}
