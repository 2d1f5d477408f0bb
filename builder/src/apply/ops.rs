//! The other Proxmox commands: rollback, destroy, status, template.

use super::flow::{observed_from, read_firstboot, template_vmid};
use super::plan::{self, FirstbootStatus, ObservedVm, RETIRED_TAG, TAG};
use super::progress::Progress;
use crate::images::ImageDef;
use crate::proxmox::api::VmRow;
use crate::proxmox::{Client, ErrorKind, Form, ProxmoxError, Upid};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::time::Duration;

fn observed(rows: &[VmRow]) -> Vec<ObservedVm> {
    rows.iter()
        .filter(|r| r.kind == "qemu")
        .map(|r| observed_from(r, None))
        .collect()
}

async fn wait(
    client: &Client,
    what: &str,
    upid: Result<Upid, ProxmoxError>,
    timeout: Duration,
) -> Result<()> {
    let upid = upid.with_context(|| what.to_owned())?;
    client
        .wait_task(&upid, timeout)
        .await
        .with_context(|| what.to_owned())?;
    Ok(())
}

/// `mms-build rollback`: start the newest retired VM, stop the serving one, swap names and tags.
pub async fn rollback(
    client: &Client,
    node: &str,
    name: &str,
    timeout: Duration,
    progress: &Progress,
) -> Result<(u32, Option<u32>)> {
    let rows = client.vms().await.context("listing VMs")?;
    let roles = plan::classify(&observed(&rows), name)
        .and_then(|roles| plan::check_nodes(&roles, node).map(|()| roles))
        .map_err(anyhow::Error::msg)?;
    let Some(back) = roles.retired.first() else {
        bail!("no VM tagged {RETIRED_TAG}: there is nothing to roll back to");
    };
    if !back.running {
        progress.info(&format!("starting retired VM {}", back.vmid));
        wait(
            client,
            &format!("starting VM {}", back.vmid),
            client.power(node, back.vmid, "start").await,
            timeout,
        )
        .await?;
    }
    let demoted = roles.current.as_ref().map(|c| c.vmid);
    if let Some(cur) = &roles.current {
        if cur.running {
            progress.info(&format!("stopping VM {}", cur.vmid));
            wait(
                client,
                &format!("stopping VM {}", cur.vmid),
                client.power(node, cur.vmid, "stop").await,
                timeout,
            )
            .await?;
        }
        let mut tags = cur.tags.clone();
        tags.push(RETIRED_TAG.into());
        client
            .set_config(
                node,
                cur.vmid,
                Form::new()
                    .text("name", plan::retired_name(name))
                    .text("tags", tags.join(";")),
            )
            .await
            .with_context(|| format!("retiring VM {}", cur.vmid))?;
    }
    let tags: Vec<String> = back
        .tags
        .iter()
        .filter(|t| *t != RETIRED_TAG)
        .cloned()
        .collect();
    let tags = if tags.is_empty() {
        vec![TAG.to_owned()]
    } else {
        tags
    };
    client
        .set_config(
            node,
            back.vmid,
            Form::new().text("name", name).text("tags", tags.join(";")),
        )
        .await
        .with_context(|| format!("renaming VM {} to {name}", back.vmid))?;
    Ok((back.vmid, demoted))
}

/// A VM `destroy` deletes.
#[derive(Debug, Clone, Serialize)]
pub struct TargetVm {
    /// VMID.
    pub vmid: u32,
    /// Name.
    pub name: String,
    /// Running (stopped first).
    pub running: bool,
    /// The cluster node it lives on.
    pub node: String,
}

/// What `destroy` would delete.
#[derive(Debug, Clone, Serialize)]
pub struct DestroyTargets {
    /// VMs tagged `mms` (serving, building, retired), on any node.
    pub vms: Vec<TargetVm>,
    /// This site's seed ISOs.
    pub isos: Vec<String>,
}

/// Lists what `destroy` deletes: every VM tagged `mms` and this site's seed ISOs.
pub async fn destroy_targets(
    client: &Client,
    node: &str,
    name: &str,
    iso_storage: &str,
) -> Result<DestroyTargets> {
    let rows = client.vms().await.context("listing VMs")?;
    let vms = observed(&rows)
        .into_iter()
        .filter(|v| !v.template && v.tags.iter().any(|t| t == TAG))
        .map(|v| TargetVm {
            vmid: v.vmid,
            name: v.name,
            running: v.running,
            node: v.node,
        })
        .collect();
    let isos = client
        .storage_content(node, iso_storage, "iso")
        .await
        .context("listing ISOs")?
        .into_iter()
        .map(|v| v.volid)
        .filter(|v| plan::is_seed_iso(v, iso_storage, name))
        .collect();
    Ok(DestroyTargets { vms, isos })
}

/// Deletes the targets (stopping running VMs first).
pub async fn destroy(
    client: &Client,
    node: &str,
    iso_storage: &str,
    t: &DestroyTargets,
    timeout: Duration,
    progress: &Progress,
) -> Result<()> {
    for vm in &t.vms {
        let TargetVm {
            vmid, name, node, ..
        } = vm;
        if vm.running {
            progress.info(&format!("stopping VM {vmid} ({name})"));
            wait(
                client,
                &format!("stopping VM {vmid}"),
                client.power(node, *vmid, "stop").await,
                timeout,
            )
            .await?;
        }
        progress.info(&format!("deleting VM {vmid} ({name})"));
        wait(
            client,
            &format!("deleting VM {vmid}"),
            client.delete_vm(node, *vmid).await,
            timeout,
        )
        .await?;
    }
    for volid in &t.isos {
        progress.info(&format!("deleting {volid}"));
        match client.delete_volume(node, iso_storage, volid).await {
            Ok(Some(upid)) => wait(client, &format!("deleting {volid}"), Ok(upid), timeout).await?,
            Ok(None) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("deleting {volid}")),
        }
    }
    Ok(())
}

/// One VM in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct VmLine {
    /// VMID.
    pub vmid: u32,
    /// Name.
    pub name: String,
    /// `serving`, `building`, `retired`.
    pub role: String,
    /// The cluster node it lives on.
    pub node: String,
    /// `running` / `stopped`.
    pub status: String,
    /// Bundle hash (16 hex), when tagged.
    pub bundle: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// firstboot phase, when readable.
    pub firstboot_phase: Option<String>,
    /// firstboot error.
    pub firstboot_error: Option<String>,
    /// `done` without error.
    pub healthy: Option<bool>,
    /// The serving VM still has the cut-over trigger: its `mms-cutover.service` has not
    /// succeeded yet (tailnet name, static address). `None` when not asked or unreadable.
    pub cutover_pending: Option<bool>,
}

/// `mms-build status`: every VM MMS manages, on whichever node it lives, with its firstboot
/// status.
pub async fn status(client: &Client, name: &str) -> Result<Vec<VmLine>> {
    let rows = client.vms().await.context("listing VMs")?;
    let roles = plan::classify(&observed(&rows), name).map_err(anyhow::Error::msg)?;
    let mut out = Vec::new();
    let mut push = |vm: &ObservedVm,
                    role: &str,
                    fb: Option<FirstbootStatus>,
                    cutover_pending: Option<bool>| {
        out.push(VmLine {
            vmid: vm.vmid,
            name: vm.name.clone(),
            role: role.into(),
            node: vm.node.clone(),
            status: if vm.running { "running" } else { "stopped" }.into(),
            bundle: vm.bundle(),
            tags: vm.tags.clone(),
            healthy: fb.as_ref().map(FirstbootStatus::healthy),
            firstboot_phase: fb.as_ref().map(|f| f.phase.clone()),
            firstboot_error: fb.and_then(|f| f.error),
            cutover_pending,
        });
    };
    for (vm, role) in roles
        .current
        .iter()
        .map(|v| (v, "serving"))
        .chain(roles.next.iter().map(|v| (v, "building")))
        .chain(roles.retired.iter().map(|v| (v, "retired")))
    {
        let fb = if vm.running {
            read_firstboot(client, &vm.node, vm.vmid).await
        } else {
            None
        };
        let cutover_pending = if vm.running && role == "serving" {
            match client
                .agent_file_read(&vm.node, vm.vmid, plan::CUTOVER_TRIGGER)
                .await
            {
                Ok(_) => Some(true),
                Err(e) if e.kind() == ErrorKind::NotFound => Some(false),
                Err(_) => None,
            }
        } else {
            None
        };
        push(vm, role, fb, cutover_pending);
    }
    Ok(out)
}

/// `mms-build template`: download the image into `import` content with its
/// checksum, create a VM importing it, convert to a template. Idempotent.
#[allow(clippy::too_many_arguments)]
pub async fn template(
    client: &Client,
    node: &str,
    import_storage: &str,
    storage: &str,
    bridge: &str,
    image: &ImageDef,
    template_name: &str,
    timeout: Duration,
    progress: &Progress,
) -> Result<u32> {
    let rows = client.vms().await.context("listing VMs")?;
    if let Ok(vmid) = template_vmid(
        &rows,
        &crate::config::TemplateRef::Name(template_name.to_owned()),
    ) {
        progress.info(&format!(
            "template {template_name} exists (VM {vmid}): nothing to do"
        ));
        return Ok(vmid);
    }
    let Some(sha256) = image.sha256.as_deref() else {
        bail!(
            "images/{}.yml: sha256 is not confirmed (null): copy the SHA-256 of {} from {} (after checking its signature) before creating the template",
            image.name,
            image.url,
            image.checksum_url
        );
    };
    let filename = image
        .url
        .rsplit('/')
        .next()
        .filter(|f| f.ends_with(".qcow2") || f.ends_with(".raw"))
        .with_context(|| {
            format!(
                "images/{}.yml: url must end in a .qcow2 or .raw file name",
                image.name
            )
        })?
        .to_owned();
    let volid = format!("{import_storage}:import/{filename}");
    let have = client
        .storage_content(node, import_storage, "import")
        .await
        .with_context(|| format!("listing import content of storage {import_storage}"))?
        .iter()
        .any(|v| v.volid == volid);
    if !have {
        progress.info(&format!(
            "downloading {} into {volid} (checksum sha256)",
            image.url
        ));
        wait(
            client,
            &format!("downloading {}", image.url),
            client
                .download_url(
                    node,
                    import_storage,
                    &image.url,
                    "import",
                    &filename,
                    sha256,
                )
                .await,
            timeout,
        )
        .await?;
    }
    // A VM from an interrupted earlier run is converted instead of created again.
    let half = rows.iter().find(|r| {
        r.kind == "qemu"
            && !r.template
            && r.name.as_deref() == Some(template_name)
            && r.tag_list().iter().any(|t| t == "mms-template")
    });
    let vmid = match half {
        Some(r) => r.vmid,
        None => {
            let vmid = client.next_id().await.context("asking for a free VMID")?;
            progress.info(&format!(
                "creating VM {vmid} ({template_name}) from {volid}"
            ));
            let form = Form::new()
                .int("vmid", vmid.into())
                .text("name", template_name)
                .text("memory", "2048")
                .int("cores", 2)
                .text("ostype", "l26")
                .text("scsihw", "virtio-scsi-pci")
                .text("scsi0", format!("{storage}:0,import-from={volid}"))
                .text("net0", format!("virtio,bridge={bridge}"))
                .text("boot", "order=scsi0")
                .text("serial0", "socket")
                .text("agent", "enabled=1")
                .text("tags", "mms-template");
            wait(
                client,
                &format!("creating VM {vmid}"),
                client.create_vm(node, form).await,
                timeout,
            )
            .await?;
            vmid
        }
    };
    progress.info(&format!("converting VM {vmid} to a template"));
    wait(
        client,
        &format!("converting VM {vmid} to a template"),
        client.make_template(node, vmid).await,
        timeout,
    )
    .await?;
    Ok(vmid)
}
