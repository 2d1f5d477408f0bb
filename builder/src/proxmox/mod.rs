//! Proxmox VE HTTP API client (issue 4).
