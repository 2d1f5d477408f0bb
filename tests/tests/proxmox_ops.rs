//! Rebuild, rollback, status, destroy, the migration snapshot and `template`
//! against the simulator.

use mms_builder::apply::flow;
use mms_builder::apply::ops;
use mms_builder::apply::plan::{CUTOVER_TRIGGER, REBUILD_AUTHORIZED_KEYS, REBUILD_KEY};
use mms_builder::apply::progress::Progress;
use mms_builder::images::ImageDef;
use mms_tests::pve_sim::CLOUD_INIT_ROOT_KEYS;
use mms_tests::pve_sim::harness::{
    HASH_A, HASH_B, client, fast_opts, inputs, rt, sim_with_template,
};
use mms_tests::pve_sim::{PveSim, SimConfig};
use std::time::Duration;

fn apply(sim: &PveSim, hash: &str) -> flow::ApplyReport {
    rt().block_on(flow::apply(
        &client(sim),
        &inputs(hash),
        &fast_opts(),
        &Progress::plain(),
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn rebuild_with_an_old_vm_then_rollback() {
    let sim = sim_with_template(SimConfig::default());
    sim.add_appliance(100, "mms", "mms;mms-fedcba9876543210");
    let report = apply(&sim, HASH_A);
    assert_eq!(report.serving, Some(101));
    assert_eq!(report.retired, Some(100));
    assert_eq!(report.warnings, Vec::<String>::new());
    {
        let st = sim.state();
        let old = &st.vms[&100];
        assert_eq!(old.name(), "mms-retired");
        assert!(!old.running);
        assert_eq!(old.tags(), ["mms", "mms-fedcba9876543210", "mms-retired"]);
        // The one-time key: public half on the old VM (removed at cut-over), private half on the new.
        assert_eq!(
            old.files[REBUILD_AUTHORIZED_KEYS], CLOUD_INIT_ROOT_KEYS,
            "one-time key removed, the rest kept"
        );
        let new = &st.vms[&101];
        assert!(new.files[REBUILD_KEY].starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_eq!(REBUILD_KEY, "/etc/mms/secrets/migrate_ssh_key");
        // The trigger was written and consumed by the guest's cut-over unit, which the
        // build waited for.
        assert!(new.cutover_at.is_some());
        assert!(!new.files.contains_key(CUTOVER_TRIGGER));
        assert_eq!(new.name(), "mms");
    }
    let lines = rt().block_on(ops::status(&client(&sim), "mms")).unwrap();
    let roles: Vec<(u32, &str)> = lines.iter().map(|l| (l.vmid, l.role.as_str())).collect();
    assert_eq!(roles, [(101, "serving"), (100, "retired")]);
    assert_eq!(lines[0].healthy, Some(true));
    assert_eq!(lines[0].cutover_pending, Some(false));
    assert_eq!(
        lines[1].cutover_pending, None,
        "asked of the serving VM only"
    );

    let (back, demoted) = rt()
        .block_on(ops::rollback(
            &client(&sim),
            "pve",
            "mms",
            Duration::from_secs(5),
            &Progress::plain(),
        ))
        .unwrap();
    assert_eq!((back, demoted), (100, Some(101)));
    let st = sim.state();
    assert_eq!(st.vms[&100].name(), "mms");
    assert!(st.vms[&100].running);
    assert!(!st.vms[&100].tags().contains(&"mms-retired".to_owned()));
    assert_eq!(st.vms[&101].name(), "mms-retired");
    assert!(!st.vms[&101].running);
    drop(st);
    // After a rollback the site's bundle is not served: the next apply rebuilds.
    let r = apply(&sim, HASH_A);
    assert!(!r.up_to_date);
    assert_eq!(r.retired, Some(100));
}

#[test]
fn a_second_rebuild_keeps_or_destroys_the_retired() {
    let sim = sim_with_template(SimConfig::default());
    apply(&sim, HASH_A);
    let r = apply(&sim, HASH_B);
    assert_eq!(r.retired, Some(100));
    let mut opts = fast_opts();
    opts.destroy_old = true;
    let mut i = inputs(HASH_A);
    i.bundle.hash = HASH_A.into();
    let r = rt()
        .block_on(flow::apply(&client(&sim), &i, &opts, &Progress::plain()))
        .unwrap();
    assert_eq!(r.serving, Some(102));
    let st = sim.state();
    assert_eq!(
        st.vms_tagged("mms").len(),
        1,
        "--destroy-old leaves only the serving VM"
    );
}

#[test]
fn first_build_snapshots_the_migration_source_once() {
    let sim = sim_with_template(SimConfig::default());
    sim.add_container(105, "radarr-lxc");
    let mut i = inputs(HASH_A);
    i.desired.migrate_vmid = Some(105);
    rt().block_on(flow::apply(
        &client(&sim),
        &i,
        &fast_opts(),
        &Progress::plain(),
    ))
    .unwrap();
    assert_eq!(
        sim.state().vms[&105].snapshots,
        ["mms-pre-migrate-0123456789abcdef"]
    );
    // A rebuild is not a first build: no second snapshot.
    let mut i = inputs(HASH_B);
    i.desired.migrate_vmid = Some(105);
    rt().block_on(flow::apply(
        &client(&sim),
        &i,
        &fast_opts(),
        &Progress::plain(),
    ))
    .unwrap();
    assert_eq!(sim.state().vms[&105].snapshots.len(), 1);
}

#[test]
fn the_migration_source_is_snapshotted_on_its_own_node_and_a_missing_one_is_named() {
    let sim = sim_with_template(SimConfig::default());
    let mut i = inputs(HASH_A);
    i.desired.migrate_vmid = Some(105);
    let err = rt()
        .block_on(flow::apply(
            &client(&sim),
            &i,
            &fast_opts(),
            &Progress::plain(),
        ))
        .unwrap_err();
    assert_eq!(err.step, "observe");
    assert!(
        err.reason
            .contains("migrate.from.proxmox_vmid is 105, but the cluster has no container"),
        "{err}"
    );
    assert_eq!(sim.state().vms.len(), 1, "nothing was built");
    sim.add_container(105, "radarr-lxc");
    sim.move_to_node(105, "pve2");
    let (_, p) = rt()
        .block_on(flow::plan_only(&client(&sim), &i, false))
        .unwrap();
    assert!(
        p.actions
            .iter()
            .any(|a| a.to_string() == "snapshot container 105 on node pve2 as mms-pre-migrate-0123456789abcdef before migrating"),
        "{:?}",
        p.actions
    );
    rt().block_on(flow::apply(
        &client(&sim),
        &i,
        &fast_opts(),
        &Progress::plain(),
    ))
    .unwrap();
    assert_eq!(
        sim.state().vms[&105].snapshots,
        ["mms-pre-migrate-0123456789abcdef"]
    );
}

#[test]
fn a_vm_on_another_cluster_node_is_shown_and_destroyed_there_but_not_rebuilt() {
    let sim = sim_with_template(SimConfig::default());
    apply(&sim, HASH_A);
    sim.move_to_node(100, "pve2");
    let c = client(&sim);
    // status reads firstboot where the VM lives.
    let lines = rt().block_on(ops::status(&c, "mms")).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0].vmid, lines[0].node.as_str()), (100, "pve2"));
    assert_eq!(lines[0].healthy, Some(true));
    // A rebuild would address VM 100 on node pve: refused before anything changes.
    let before = sim.requests().len();
    let err = rt()
        .block_on(flow::apply(
            &c,
            &inputs(HASH_B),
            &fast_opts(),
            &Progress::plain(),
        ))
        .unwrap_err();
    assert_eq!(err.step, "observe");
    assert!(
        err.reason.contains("VM 100 (mms) is on node pve2")
            && err.reason.contains("qm migrate 100 pve"),
        "{err}"
    );
    assert!(
        sim.requests()[before..].iter().all(|r| r.method == "GET"),
        "nothing was changed"
    );
    assert_eq!(sim.state().vms.len(), 2, "template and VM 100 only");
    let err = rt()
        .block_on(ops::rollback(
            &c,
            "pve",
            "mms",
            Duration::from_secs(5),
            &Progress::plain(),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("is on node pve2"), "{err}");
    // destroy works on every node.
    let t = rt()
        .block_on(ops::destroy_targets(&c, "pve", "mms", "local"))
        .unwrap();
    assert_eq!(t.vms.len(), 1);
    assert_eq!(t.vms[0].node, "pve2");
    rt().block_on(ops::destroy(
        &c,
        "pve",
        "local",
        &t,
        Duration::from_secs(5),
        &Progress::plain(),
    ))
    .unwrap();
    assert!(!sim.state().vms.contains_key(&100));
}

#[test]
fn a_leftover_next_of_the_other_rendering_is_replaced_by_a_clone_sized_from_the_template() {
    let sim = sim_with_template(SimConfig::default());
    // The template's disk is already larger than vm.disk_gib (64): no resize may be planned
    // (Proxmox cannot shrink a disk).
    sim.state()
        .vms
        .get_mut(&mms_tests::pve_sim::harness::TEMPLATE_VMID)
        .unwrap()
        .config
        .insert("scsi0".into(), "local-lvm:base-9000-disk-0,size=80G".into());
    // An unfinished build of the rebuild rendering; nothing serves, so the first-build
    // rendering is chosen and the leftover is discarded.
    const REB: &str = "aaaaaaaaaaaaaaaa0000000000000000000000000000000000000000000000aa";
    sim.add_appliance(100, "mms-next", "mms;mms-aaaaaaaaaaaaaaaa");
    let mut i = inputs(HASH_A);
    i.rebuild_bundle = Some(mms_builder::apply::inputs::Bundle {
        hash: REB.into(),
        seed_iso: b"rebuild seed".to_vec(),
    });
    let (_, p) = rt()
        .block_on(flow::plan_only(&client(&sim), &i, false))
        .unwrap();
    let steps: Vec<&str> = p.actions.iter().map(|a| a.step()).collect();
    assert_eq!(steps[..2], ["discard-stale-next", "clone"], "{steps:?}");
    assert!(!steps.contains(&"resize"), "{:?}", p.actions);
}

#[test]
fn destroy_removes_every_mms_vm_and_iso() {
    let sim = sim_with_template(SimConfig::default());
    apply(&sim, HASH_A);
    apply(&sim, HASH_B);
    // A seed ISO left by an interrupted build, and one of another site whose name starts
    // with this one's.
    let ours = "local:iso/mms-00112233aabbccdd.iso";
    let other_site = "local:iso/mms-lab-00112233aabbccdd.iso";
    for volid in [ours, other_site] {
        sim.state().volumes.insert(
            volid.into(),
            mms_tests::pve_sim::state::StoredVolume {
                size: 1,
                sha256: String::new(),
            },
        );
    }
    let c = client(&sim);
    let t = rt()
        .block_on(ops::destroy_targets(&c, "pve", "mms", "local"))
        .unwrap();
    assert_eq!(t.vms.len(), 2);
    assert_eq!(t.isos, [ours]);
    rt().block_on(ops::destroy(
        &c,
        "pve",
        "local",
        &t,
        Duration::from_secs(5),
        &Progress::plain(),
    ))
    .unwrap();
    let st = sim.state();
    assert!(st.vms_tagged("mms").is_empty());
    assert!(st.vms.contains_key(&9000));
    assert!(!st.volumes.contains_key(ours));
    assert!(st.volumes.contains_key(other_site));
}

fn image(sha256: Option<&str>) -> ImageDef {
    ImageDef {
        name: "fedora-43".into(),
        release: "43".into(),
        arch: "x86_64".into(),
        url: "https://mirror.example/Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2".into(),
        checksum_url: "https://mirror.example/CHECKSUM".into(),
        sha256: sha256.map(str::to_owned),
    }
}

#[test]
fn template_downloads_imports_and_converts_idempotently() {
    let sha = "a".repeat(64);
    let mut cfg = SimConfig::default();
    cfg.downloads
        .insert(image(None).url, (500 << 20, sha.clone()));
    let sim = PveSim::start(cfg);
    let c = client(&sim);
    let tmpl = |img: &ImageDef| {
        rt().block_on(ops::template(
            &c,
            "pve",
            "local",
            "local-lvm",
            "vmbr0",
            img,
            "fedora-43",
            Duration::from_secs(5),
            &Progress::plain(),
        ))
    };
    let err = tmpl(&image(None)).unwrap_err();
    assert!(
        format!("{err:#}").contains("sha256 is not confirmed"),
        "{err:#}"
    );
    let err = tmpl(&image(Some(&"b".repeat(64)))).unwrap_err();
    assert!(format!("{err:#}").contains("checksum mismatch"), "{err:#}");
    let vmid = tmpl(&image(Some(&sha))).unwrap();
    {
        let st = sim.state();
        let vm = &st.vms[&vmid];
        assert_eq!(vm.config["template"], "1");
        assert_eq!(vm.name(), "fedora-43");
        assert!(
            st.volumes
                .contains_key("local:import/Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2")
        );
    }
    sim.clear_requests();
    assert_eq!(tmpl(&image(Some(&sha))).unwrap(), vmid);
    assert!(sim.requests().iter().all(|r| r.method == "GET"));
    // The new template is what apply clones.
    rt().block_on(flow::apply(
        &c,
        &inputs(HASH_A),
        &fast_opts(),
        &Progress::plain(),
    ))
    .unwrap();
}

#[test]
fn a_clone_not_yet_in_the_resource_list_is_found_by_its_config() {
    // Right after a clone, cluster/resources shows the VM without name or tags.
    let sim = sim_with_template(SimConfig {
        rrd_delay: Duration::from_secs(30),
        ..SimConfig::default()
    });
    sim.inject(mms_tests::pve_sim::Fault::new(
        "POST",
        "/status/start",
        mms_tests::pve_sim::FaultKind::FailTask("start failed".into()),
        1,
    ));
    let c = client(&sim);
    let err = rt()
        .block_on(flow::apply(
            &c,
            &inputs(HASH_A),
            &fast_opts(),
            &Progress::plain(),
        ))
        .unwrap_err();
    assert_eq!(err.step, "start");
    let r = rt()
        .block_on(flow::apply(
            &c,
            &inputs(HASH_A),
            &fast_opts(),
            &Progress::plain(),
        ))
        .unwrap();
    assert_eq!(
        r.serving,
        Some(100),
        "the existing -next VM was resumed, not cloned again"
    );
    assert_eq!(sim.state().vms.len(), 2, "template + one VM");
}

#[test]
fn a_task_with_warnings_succeeds() {
    let sim = sim_with_template(SimConfig::default());
    sim.inject(mms_tests::pve_sim::Fault::new(
        "PUT",
        "/resize",
        mms_tests::pve_sim::FaultKind::Warnings(2),
        1,
    ));
    let r = apply(&sim, HASH_A);
    assert_eq!(r.serving, Some(100));
    assert!(sim.state().vms[&100].config["scsi0"].ends_with("size=64G"));
}

#[test]
fn a_stale_next_still_cloning_is_waited_for_then_discarded() {
    let sim = sim_with_template(SimConfig::default());
    sim.inject(mms_tests::pve_sim::Fault::new(
        "POST",
        "/clone",
        mms_tests::pve_sim::FaultKind::SlowTask(Duration::from_millis(1500)),
        1,
    ));
    let mut opts = fast_opts();
    opts.task_timeout = Duration::from_millis(300);
    let c = client(&sim);
    let err = rt()
        .block_on(flow::apply(&c, &inputs(HASH_B), &opts, &Progress::plain()))
        .unwrap_err();
    assert_eq!(err.step, "clone");
    assert_eq!(
        sim.state().vms[&100].config.get("lock").map(String::as_str),
        Some("clone")
    );
    // The site changed meanwhile: the half-cloned VM of bundle B goes, A is built.
    let r = rt()
        .block_on(flow::apply(
            &c,
            &inputs(HASH_A),
            &fast_opts(),
            &Progress::plain(),
        ))
        .unwrap();
    assert!(
        r.steps
            .starts_with(&["discard-stale-next".to_owned(), "clone".to_owned()]),
        "{:?}",
        r.steps
    );
    let st = sim.state();
    assert_eq!(
        st.vms.len(),
        2,
        "template + the new VM (VMID 100 reused after the discard)"
    );
    assert_eq!(st.vms_tagged("mms-0123456789abcdef").len(), 1);
    assert!(st.vms_tagged("mms-fedcba9876543210").is_empty());
}

#[test]
fn first_build_and_rebuild_renderings_both_count_as_up_to_date() {
    use mms_builder::apply::inputs::Bundle;
    use mms_tests::pve_sim::harness::seed_iso;
    let with_rebuild = |first: &str, rebuild: &str| {
        let mut i = inputs(first);
        i.rebuild_bundle = Some(Bundle {
            hash: rebuild.into(),
            seed_iso: seed_iso(rebuild),
        });
        i
    };
    const REB_A: &str = "aaaaaaaaaaaaaaaa0000000000000000000000000000000000000000000000aa";
    const REB_B: &str = "bbbbbbbbbbbbbbbb0000000000000000000000000000000000000000000000bb";
    let sim = sim_with_template(SimConfig::default());
    let c = client(&sim);
    let run = |i: &mms_builder::apply::inputs::ApplyInputs| {
        rt().block_on(flow::apply(&c, i, &fast_opts(), &Progress::plain()))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // Nothing runs: the first-build rendering is built.
    let r = run(&with_rebuild(HASH_A, REB_A));
    assert_eq!(r.bundle.as_deref(), Some("0123456789abcdef"));
    assert!(run(&with_rebuild(HASH_A, REB_A)).up_to_date);
    // The site changed and VM 100 runs: the rebuild rendering is built, with a key exchange.
    let r = run(&with_rebuild(HASH_B, REB_B));
    assert_eq!(r.bundle.as_deref(), Some("bbbbbbbbbbbbbbbb"));
    assert!(r.steps.contains(&"rebuild-key".to_owned()));
    let st = sim.state();
    assert!(st.vms[&101].files.contains_key(REBUILD_KEY));
    drop(st);
    // ... and that counts as up to date for the same site.
    let r = run(&with_rebuild(HASH_B, REB_B));
    assert!(r.up_to_date, "{r:?}");
    assert_eq!(r.bundle.as_deref(), Some("bbbbbbbbbbbbbbbb"));
}

/// Runs a first build against a simulator whose boot stalls; returns the error.
fn stalled_apply(
    stall: impl FnOnce(&mut SimConfig),
    limit: impl FnOnce(&mut flow::ApplyOptions),
) -> (PveSim, flow::ApplyError) {
    let mut cfg = SimConfig::default();
    stall(&mut cfg);
    let sim = sim_with_template(cfg);
    let mut opts = fast_opts();
    limit(&mut opts);
    let err = rt()
        .block_on(flow::apply(
            &client(&sim),
            &inputs(HASH_A),
            &opts,
            &Progress::plain(),
        ))
        .expect_err("the stalled build must fail");
    (sim, err)
}

#[test]
fn firstboot_that_never_starts_is_reported_at_wait_agent() {
    let (sim, err) = stalled_apply(
        |c| c.durations.cloud_init = Duration::from_secs(3600),
        |o| o.firstboot_timeout = Duration::from_millis(500),
    );
    assert_eq!(err.step, "wait-agent");
    assert!(err.reason.contains("firstboot did not start"), "{err}");
    assert!(err.next.contains("cloud-init status --long"), "{err}");
    assert!(
        sim.state().vms[&100].files.is_empty(),
        "no secret is written before firstboot runs"
    );
}

#[test]
fn a_cutover_that_does_not_finish_is_a_warning_not_a_failure() {
    let mut cfg = SimConfig::default();
    cfg.durations.cutover = Duration::from_secs(3600);
    let sim = sim_with_template(cfg);
    sim.add_appliance(100, "mms", "mms;mms-fedcba9876543210");
    let mut opts = fast_opts();
    opts.cutover_timeout = Duration::from_millis(600);
    let report = rt()
        .block_on(flow::apply(
            &client(&sim),
            &inputs(HASH_A),
            &opts,
            &Progress::plain(),
        ))
        .unwrap();
    // The new VM serves; the old one is retired as usual.
    assert_eq!((report.serving, report.retired), (Some(101), Some(100)));
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    let w = &report.warnings[0];
    assert!(
        w.starts_with("VM 101 has not finished its cut-over (tailnet name, static address) within"),
        "{w}"
    );
    assert!(w.contains("journalctl -u mms-cutover"), "{w}");
    assert!(sim.state().vms[&101].files.contains_key(CUTOVER_TRIGGER));
    // `status` shows it too.
    let lines = rt().block_on(ops::status(&client(&sim), "mms")).unwrap();
    assert_eq!((lines[0].vmid, lines[0].cutover_pending), (101, Some(true)));
}

#[test]
fn guest_agent_that_never_answers_is_reported_with_the_console_to_look_at() {
    let (sim, err) = stalled_apply(
        |c| c.durations.agent_boot = Duration::from_secs(3600),
        |o| o.agent_timeout = Duration::from_millis(500),
    );
    assert_eq!(err.step, "wait-agent");
    assert!(
        err.reason
            .contains("the guest agent of VM 100 did not answer within"),
        "{err}"
    );
    assert!(err.next.contains("qm terminal 100"), "{err}");
    assert!(err.next.contains("qemu-guest-agent"), "{err}");
    assert!(sim.state().vms[&100].files.is_empty());
}

#[test]
fn firstboot_stuck_in_a_phase_is_reported_with_that_phase() {
    let (sim, err) = stalled_apply(
        |c| c.durations.firstboot_phase = Duration::from_secs(3600),
        |o| o.firstboot_timeout = Duration::from_millis(800),
    );
    assert_eq!(err.step, "firstboot");
    assert!(
        err.reason
            .contains("firstboot of VM 100 did not finish within"),
        "{err}"
    );
    assert!(err.reason.contains("(phase "), "{err}");
    assert!(err.next.contains("mms-build status"), "{err}");
    // The VM is left as it is for the operator to look at; nothing was cut over.
    let st = sim.state();
    assert!(st.vms[&100].running);
    assert_eq!(st.vms[&100].name(), "mms-next");
}
