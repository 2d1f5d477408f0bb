//! Typed calls for the endpoints the MMS flow uses, with serde DTOs that
//! unwrap the `{"data"}` envelope leniently (Proxmox adds keys between releases).

use super::client::{Client, upid_of};
use super::error::ProxmoxError;
use super::form::{Form, percent_encode};
use super::upid::Upid;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One row of `GET /cluster/resources?type=vm`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VmRow {
    /// VMID.
    pub vmid: u32,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Node the guest lives on.
    pub node: String,
    /// `running`, `stopped`, or `unknown` right after creation.
    #[serde(default)]
    pub status: String,
    /// Name (absent for a moment after clone/create).
    #[serde(default)]
    pub name: Option<String>,
    /// `;`-separated tags.
    #[serde(default)]
    pub tags: Option<String>,
    /// 1 for templates.
    #[serde(default, deserialize_with = "de_bool")]
    pub template: bool,
    /// Config lock, e.g. `clone`.
    #[serde(default)]
    pub lock: Option<String>,
}

impl VmRow {
    /// The tags as a list (split on `;`, `,` and whitespace, lower-cased).
    pub fn tag_list(&self) -> Vec<String> {
        split_tags(self.tags.as_deref().unwrap_or(""))
    }
}

/// Splits a Proxmox tag list (`;`, `,` or whitespace separated), lower-cased.
pub fn split_tags(s: &str) -> Vec<String> {
    s.split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn de_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        Value::String(s) => s == "1",
        _ => false,
    })
}

/// A VM's configuration: key → value as returned (numbers stay numbers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmConfig(pub BTreeMap<String, Value>);

impl VmConfig {
    /// A value as text (numbers rendered), if present.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            v => Some(v.to_string()),
        }
    }

    /// The tags.
    pub fn tags(&self) -> Vec<String> {
        split_tags(&self.get("tags").unwrap_or_default())
    }
}

/// `GET …/status/current` subset.
#[derive(Debug, Clone, Deserialize)]
pub struct VmStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Config lock.
    #[serde(default)]
    pub lock: Option<String>,
}

/// A storage volume from `GET …/storage/{s}/content`.
#[derive(Debug, Clone, Deserialize)]
pub struct Volume {
    /// `local:iso/x.iso`.
    pub volid: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
}

/// The result of `agent/file-read`.
#[derive(Debug, Clone, Deserialize)]
pub struct FileRead {
    /// The (decoded) content.
    pub content: String,
    /// Set when the read did not reach the end.
    #[serde(default, deserialize_with = "de_bool")]
    pub truncated: bool,
}

fn decode<T: serde::de::DeserializeOwned>(
    method: &str,
    path: &str,
    v: Value,
) -> Result<T, ProxmoxError> {
    serde_json::from_value(v).map_err(|e| ProxmoxError::Protocol {
        method: method.to_owned(),
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn qemu(node: &str, vmid: u32) -> String {
    format!("/nodes/{node}/qemu/{vmid}")
}

impl Client {
    /// `GET /version` → the release (`9.1`).
    pub async fn version(&self) -> Result<String, ProxmoxError> {
        let v = self.get("/version", Form::new()).await?;
        Ok(v.get("release")
            .or_else(|| v.get("version"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// `GET /cluster/nextid`; accepts the string the server really sends and an integer.
    pub async fn next_id(&self) -> Result<u32, ProxmoxError> {
        let path = "/cluster/nextid";
        let v = self.get(path, Form::new()).await?;
        let parsed = match &v {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        parsed.ok_or_else(|| ProxmoxError::Protocol {
            method: "GET".into(),
            path: path.into(),
            detail: format!("nextid is not a VMID: {v}"),
        })
    }

    /// All guests (`GET /cluster/resources?type=vm`).
    pub async fn vms(&self) -> Result<Vec<VmRow>, ProxmoxError> {
        let path = "/cluster/resources";
        let v = self.get(path, Form::new().text("type", "vm")).await?;
        decode("GET", path, v)
    }

    /// `GET …/qemu/{vmid}/config`.
    pub async fn vm_config(&self, node: &str, vmid: u32) -> Result<VmConfig, ProxmoxError> {
        let path = format!("{}/config", qemu(node, vmid));
        let v = self.get(&path, Form::new()).await?;
        Ok(VmConfig(decode("GET", &path, v)?))
    }

    /// `PUT …/qemu/{vmid}/config` (synchronous).
    pub async fn set_config(&self, node: &str, vmid: u32, form: Form) -> Result<(), ProxmoxError> {
        self.put(&format!("{}/config", qemu(node, vmid)), form)
            .await?;
        Ok(())
    }

    /// `POST …/qemu/{src}/clone` as a full clone.
    #[allow(clippy::too_many_arguments)]
    pub async fn clone_vm(
        &self,
        node: &str,
        src: u32,
        newid: u32,
        name: &str,
        pool: Option<&str>,
        storage: Option<&str>,
        description: Option<&str>,
    ) -> Result<Upid, ProxmoxError> {
        let path = format!("{}/clone", qemu(node, src));
        let mut f = Form::new()
            .int("newid", newid.into())
            .text("name", name)
            .bool("full", true);
        if let Some(p) = pool {
            f = f.text("pool", p);
        }
        if let Some(s) = storage {
            f = f.text("storage", s);
        }
        if let Some(d) = description {
            f = f.text("description", d);
        }
        let v = self.post(&path, f).await?;
        upid_of("POST", &path, &v)
    }

    /// `PUT …/resize` (a task since PVE 8.0).
    pub async fn resize(
        &self,
        node: &str,
        vmid: u32,
        disk: &str,
        size: &str,
    ) -> Result<Upid, ProxmoxError> {
        let path = format!("{}/resize", qemu(node, vmid));
        let v = self
            .put(&path, Form::new().text("disk", disk).text("size", size))
            .await?;
        upid_of("PUT", &path, &v)
    }

    /// `POST …/status/{start|stop|shutdown}`.
    pub async fn power(&self, node: &str, vmid: u32, action: &str) -> Result<Upid, ProxmoxError> {
        let path = format!("{}/status/{action}", qemu(node, vmid));
        let v = self.post(&path, Form::new()).await?;
        upid_of("POST", &path, &v)
    }

    /// `GET …/status/current`.
    pub async fn vm_status(&self, node: &str, vmid: u32) -> Result<VmStatus, ProxmoxError> {
        let path = format!("{}/status/current", qemu(node, vmid));
        let v = self.get(&path, Form::new()).await?;
        decode("GET", &path, v)
    }

    /// `DELETE …/qemu/{vmid}` with purge and unreferenced disks.
    pub async fn delete_vm(&self, node: &str, vmid: u32) -> Result<Upid, ProxmoxError> {
        let path = qemu(node, vmid);
        let v = self
            .delete(
                &path,
                Form::new()
                    .bool("purge", true)
                    .bool("destroy-unreferenced-disks", true),
            )
            .await?;
        upid_of("DELETE", &path, &v)
    }

    /// `POST …/agent/ping`.
    pub async fn agent_ping(&self, node: &str, vmid: u32) -> Result<(), ProxmoxError> {
        self.post(&format!("{}/agent/ping", qemu(node, vmid)), Form::new())
            .await?;
        Ok(())
    }

    /// `POST …/agent/file-write` (the server base64-encodes for QEMU).
    pub async fn agent_file_write(
        &self,
        node: &str,
        vmid: u32,
        file: &str,
        content: &str,
    ) -> Result<(), ProxmoxError> {
        self.post(
            &format!("{}/agent/file-write", qemu(node, vmid)),
            Form::new().text("file", file).text("content", content),
        )
        .await?;
        Ok(())
    }

    /// `GET …/agent/file-read`.
    pub async fn agent_file_read(
        &self,
        node: &str,
        vmid: u32,
        file: &str,
    ) -> Result<FileRead, ProxmoxError> {
        let path = format!("{}/agent/file-read", qemu(node, vmid));
        let v = self.get(&path, Form::new().text("file", file)).await?;
        decode("GET", &path, v)
    }

    /// `GET …/storage/{storage}/content?content=…`.
    pub async fn storage_content(
        &self,
        node: &str,
        storage: &str,
        content: &str,
    ) -> Result<Vec<Volume>, ProxmoxError> {
        let path = format!("/nodes/{node}/storage/{storage}/content");
        let v = self
            .get(&path, Form::new().text("content", content))
            .await?;
        decode("GET", &path, v)
    }

    /// `DELETE …/content/{volid}`; `None` when it finished within the delay.
    pub async fn delete_volume(
        &self,
        node: &str,
        storage: &str,
        volid: &str,
    ) -> Result<Option<Upid>, ProxmoxError> {
        let path = format!(
            "/nodes/{node}/storage/{storage}/content/{}",
            percent_encode(volid)
        );
        let v = self.delete(&path, Form::new().int("delay", 5)).await?;
        if v.is_null() {
            Ok(None)
        } else {
            upid_of("DELETE", &path, &v).map(Some)
        }
    }

    /// `POST …/storage/{s}/download-url` with a SHA-256 checksum.
    pub async fn download_url(
        &self,
        node: &str,
        storage: &str,
        url: &str,
        content: &str,
        filename: &str,
        sha256: &str,
    ) -> Result<Upid, ProxmoxError> {
        let path = format!("/nodes/{node}/storage/{storage}/download-url");
        let v = self
            .post(
                &path,
                Form::new()
                    .text("url", url)
                    .text("content", content)
                    .text("filename", filename)
                    .text("checksum", sha256)
                    .text("checksum-algorithm", "sha256"),
            )
            .await?;
        upid_of("POST", &path, &v)
    }

    /// `POST /nodes/{node}/qemu` (create).
    pub async fn create_vm(&self, node: &str, form: Form) -> Result<Upid, ProxmoxError> {
        let path = format!("/nodes/{node}/qemu");
        let v = self.post(&path, form).await?;
        upid_of("POST", &path, &v)
    }

    /// `POST …/template`.
    pub async fn make_template(&self, node: &str, vmid: u32) -> Result<Upid, ProxmoxError> {
        let path = format!("{}/template", qemu(node, vmid));
        let v = self.post(&path, Form::new()).await?;
        upid_of("POST", &path, &v)
    }

    /// Snapshot names of a container (`GET …/lxc/{vmid}/snapshot`).
    pub async fn lxc_snapshots(&self, node: &str, vmid: u32) -> Result<Vec<String>, ProxmoxError> {
        let path = format!("/nodes/{node}/lxc/{vmid}/snapshot");
        let v = self.get(&path, Form::new()).await?;
        let rows: Vec<BTreeMap<String, Value>> = decode("GET", &path, v)?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    /// `POST …/lxc/{vmid}/snapshot`.
    pub async fn lxc_snapshot(
        &self,
        node: &str,
        vmid: u32,
        snapname: &str,
        description: &str,
    ) -> Result<Upid, ProxmoxError> {
        let path = format!("/nodes/{node}/lxc/{vmid}/snapshot");
        let v = self
            .post(
                &path,
                Form::new()
                    .text("snapname", snapname)
                    .text("description", description),
            )
            .await?;
        upid_of("POST", &path, &v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_leniently() {
        let v: Vec<VmRow> = serde_json::from_value(serde_json::json!([
            {"id":"qemu/100","type":"qemu","vmid":100,"node":"pve","status":"running","name":"mms",
             "template":0,"tags":"mms;mms-0123456789abcdef","maxmem":1,"memhost":2},
            {"id":"qemu/101","type":"qemu","vmid":101,"node":"pve","status":"unknown"}
        ]))
        .unwrap();
        assert_eq!(v[0].tag_list(), vec!["mms", "mms-0123456789abcdef"]);
        assert_eq!(v[1].name, None);
        assert!(!v[1].template);
    }

    #[test]
    fn tags_split_like_proxmox() {
        assert_eq!(split_tags("a;B, c d"), vec!["a", "b", "c", "d"]);
    }
}
