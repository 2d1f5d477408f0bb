//! The client's wire behaviour against the simulator: TLS pinning, auth,
//! permission, parameter and task errors, keep-alive, form encoding.

use mms_builder::apply::flow;
use mms_builder::apply::progress::Progress;
use mms_builder::proxmox::{Client, ErrorKind, Form, ProxmoxError, Trust};
use mms_tests::pve_sim::harness::{
    HASH_A, client, fast_opts, inputs, rt, settings, sim_with_template,
};
use mms_tests::pve_sim::{Fault, FaultKind, SimConfig};
use std::time::{Duration, Instant};

#[test]
fn pin_mismatch_is_refused_before_any_request() {
    let sim = sim_with_template(SimConfig::default());
    let mut s = settings(&sim);
    s.trust = Trust::Fingerprint([0x42; 32]);
    let c = Client::new(&s).unwrap();
    let err = rt().block_on(c.vms()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(
        err.to_string().contains(&sim.fingerprint_hex()),
        "names the presented fingerprint: {err}"
    );
    assert!(
        sim.requests().is_empty(),
        "a request reached the server: {:?}",
        sim.requests()
    );
    // The same client with the right pin works.
    let ok = Client::new(&settings(&sim)).unwrap();
    assert!(rt().block_on(ok.vms()).is_ok());
}

#[test]
fn ca_file_trust_verifies_the_chain() {
    // The simulator's certificate is self-signed for 127.0.0.1: as its own CA it verifies;
    // an unrelated CA does not.
    let sim = sim_with_template(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other.example".into()]).unwrap();
    let pem = dir.path().join("other.pem");
    std::fs::write(&pem, other.cert.pem()).unwrap();
    let mut s = settings(&sim);
    s.trust = Trust::CaFile(pem);
    let err = rt().block_on(Client::new(&s).unwrap().vms()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(sim.requests().is_empty());
}

#[test]
fn wrong_secret_is_a_delayed_401_without_body() {
    let sim = sim_with_template(SimConfig::default());
    let mut s = settings(&sim);
    s.token_secret = "not-the-secret".into();
    let c = Client::new(&s).unwrap();
    let t = Instant::now();
    let err = rt().block_on(c.version()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "401 came without the server's delay"
    );
    assert!(!err.to_string().contains("not-the-secret"));
    assert_eq!(sim.requests().len(), 1, "a 4xx must not be retried");
}

#[test]
fn missing_privilege_is_named() {
    let mut cfg = SimConfig::default();
    cfg.privileges.remove("VM.Config.CDROM");
    let sim = sim_with_template(cfg);
    let c = client(&sim);
    let err = rt()
        .block_on(flow::apply(
            &c,
            &inputs(HASH_A),
            &fast_opts(),
            &Progress::plain(),
        ))
        .unwrap_err();
    assert_eq!(err.step, "attach-iso");
    assert_eq!(err.kind, Some(ErrorKind::Permission));
    assert!(err.reason.contains("VM.Config.CDROM"), "{err}");
    assert!(err.next.contains("grant VM.Config.CDROM"), "{err}");
}

#[test]
fn upload_403_from_the_auth_layer_names_the_privilege() {
    let mut cfg = SimConfig::default();
    cfg.privileges.remove("Datastore.AllocateTemplate");
    let sim = sim_with_template(cfg);
    let err = rt()
        .block_on(client(&sim).upload("pve", "local", "iso", "x.iso", b"data"))
        .unwrap_err();
    match &err {
        ProxmoxError::Permission { privilege, .. } => {
            assert_eq!(
                privilege.as_deref(),
                Some("Datastore.AllocateTemplate"),
                "{err}"
            )
        }
        other => panic!("expected a permission error, got {other}"),
    }
}

#[test]
fn sdn_use_is_named_for_the_bridge() {
    let mut cfg = SimConfig::default();
    cfg.privileges.remove("SDN.Use");
    let sim = sim_with_template(cfg);
    let err = rt()
        .block_on(flow::apply(
            &client(&sim),
            &inputs(HASH_A),
            &fast_opts(),
            &Progress::plain(),
        ))
        .unwrap_err();
    assert_eq!(err.step, "clone");
    assert!(
        err.reason
            .contains("/sdn/zones/localnetwork/vmbr0, SDN.Use"),
        "{err}"
    );
}

#[test]
fn parameter_errors_carry_the_errors_map_and_are_not_retried() {
    let sim = sim_with_template(SimConfig::default());
    let c = client(&sim);
    let form = Form::new()
        .int("newid", 99)
        .text("full", "true")
        .text("bogus", "1");
    let err = rt()
        .block_on(c.post("/nodes/pve/qemu/9000/clone", form))
        .unwrap_err();
    let ProxmoxError::Parameter { errors, .. } = &err else {
        panic!("expected a parameter error, got {err}");
    };
    assert_eq!(errors["newid"], "value must have a minimum value of 100");
    assert_eq!(errors["full"], "type check ('boolean') failed - got 'true'");
    assert!(errors["bogus"].contains("not defined in schema"));
    assert_eq!(sim.requests().len(), 1);
}

#[test]
fn lock_and_not_found_texts_map_to_kinds() {
    let sim = sim_with_template(SimConfig::default());
    let c = client(&sim);
    let err = rt().block_on(c.vm_config("pve", 4242)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string()
            .contains("qemu-server/4242.conf' does not exist")
    );
    // A clone in progress holds `lock: clone`.
    sim.inject(Fault::new(
        "POST",
        "/clone",
        FaultKind::SlowTask(Duration::from_secs(2)),
        1,
    ));
    let upid = rt()
        .block_on(c.clone_vm("pve", 9000, 150, "x", None, None, None))
        .unwrap();
    assert_eq!(upid.task_type, "qmclone");
    assert_eq!(upid.id, "9000");
    let cfg = rt().block_on(c.vm_config("pve", 150)).unwrap();
    assert_eq!(cfg.get("lock").as_deref(), Some("clone"));
    let err = rt()
        .block_on(c.set_config("pve", 150, Form::new().int("cores", 2)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Lock);
    assert!(err.to_string().contains("VM is locked (clone)"));
}

#[test]
fn failed_task_reports_the_log_tail() {
    let sim = sim_with_template(SimConfig::default());
    let c = client(&sim);
    sim.inject(Fault::new(
        "PUT",
        "/resize",
        FaultKind::FailTask("shrinking disks is not supported".into()),
        1,
    ));
    let upid = rt()
        .block_on(c.resize("pve", 9000, "scsi0", "+1G"))
        .unwrap();
    let err = rt()
        .block_on(c.wait_task(&upid, Duration::from_secs(5)))
        .unwrap_err();
    let ProxmoxError::TaskFailed {
        exitstatus,
        log_tail,
        ..
    } = &err
    else {
        panic!("expected task failure, got {err}");
    };
    assert_eq!(exitstatus, "shrinking disks is not supported");
    assert_eq!(
        log_tail.last().map(String::as_str),
        Some("TASK ERROR: shrinking disks is not supported")
    );
}

#[test]
fn idle_keep_alive_close_is_survived() {
    let cfg = SimConfig {
        idle_timeout: Duration::from_millis(150),
        ..SimConfig::default()
    };
    let sim = sim_with_template(cfg);
    let c = client(&sim);
    let rt = rt();
    rt.block_on(c.version()).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    rt.block_on(c.version()).unwrap();
    // Every error answer closes the connection too; the next call still works.
    assert!(rt.block_on(c.vm_config("pve", 4242)).is_err());
    rt.block_on(c.version()).unwrap();
}

#[test]
fn sshkeys_are_double_encoded_and_raw_keys_rejected() {
    let sim = sim_with_template(SimConfig::default());
    let c = client(&sim);
    let keys = vec!["ssh-ed25519 AAAAC3Nza+/= me@laptop".to_owned()];
    rt().block_on(c.set_config("pve", 9000, Form::new().sshkeys("sshkeys", &keys)))
        .unwrap();
    let stored = sim.state().vms[&9000].config["sshkeys"].clone();
    assert_eq!(stored, "ssh-ed25519%20AAAAC3Nza%2B%2F%3D%20me%40laptop");
    let err = rt()
        .block_on(c.set_config("pve", 9000, Form::new().text("sshkeys", keys[0].clone())))
        .unwrap_err();
    let ProxmoxError::Parameter { errors, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        errors["sshkeys"].starts_with("invalid format - invalid urlencoded string"),
        "{errors:?}"
    );
}

#[test]
fn nextid_string_and_upid_node_are_honoured() {
    let sim = sim_with_template(SimConfig::default());
    let c = client(&sim);
    assert_eq!(rt().block_on(c.next_id()).unwrap(), 100);
    let upid = rt().block_on(c.power("pve", 9000, "start")).unwrap();
    assert_eq!(upid.node, "pve");
    // Starting a template fails inside the task, with Proxmox's text.
    let err = rt()
        .block_on(c.wait_task(&upid, Duration::from_secs(5)))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("you can't start a vm if it's a template"),
        "{err}"
    );
}
