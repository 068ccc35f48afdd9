//! Dashboards of GPU and pipeline health, generated from the selected DCGM fields, pure: a
//! Grafana dashboard in a ConfigMap the Grafana sidecar loads ([`grafana`]) and a CloudWatch
//! dashboard body on the EMF metrics ([`cloudwatch`]). A panel exists only for a field the
//! pipeline ships, and reads only the dimension sets EMF declares.

pub mod cloudwatch;
pub mod grafana;

pub use super::monitoring::{EffDashboards, dashboard_name};

/// Title and unit (Grafana unit id) of a panel of a DCGM field; fields mlobs knows no better name
/// for get their own name.
pub fn panel_of(field: &str) -> (String, &'static str) {
    let (title, unit) = match field {
        "DCGM_FI_DEV_GPU_UTIL" => ("GPU utilisation", "percent"),
        "DCGM_FI_DEV_MEM_COPY_UTIL" => ("Memory copy utilisation", "percent"),
        "DCGM_FI_DEV_FB_USED" => ("Framebuffer memory used", "decmbytes"),
        "DCGM_FI_DEV_FB_FREE" => ("Framebuffer memory free", "decmbytes"),
        "DCGM_FI_DEV_GPU_TEMP" => ("GPU temperature", "celsius"),
        "DCGM_FI_DEV_POWER_USAGE" => ("Power draw", "watt"),
        "DCGM_FI_DEV_XID_ERRORS" => ("Last XID error", "none"),
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" => ("Double-bit ECC errors", "none"),
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL" => ("Single-bit ECC errors", "none"),
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL" => ("NVLink bandwidth", "none"),
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER" => ("PCIe replays", "none"),
        other => (other, "none"),
    };
    (format!("{title} ({field})"), unit)
}
