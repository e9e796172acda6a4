//! Readings of the box itself through sysinfo: memory and CPU of this process, free
//! disk under the state directory, and the SoC temperature where the kernel exposes it.

use std::path::{Path, PathBuf};

use sysinfo::{Components, Disks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// One reading of the box.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemSnapshot {
    /// Resident memory of this process.
    pub rss_bytes: u64,
    /// CPU use of this process since the previous reading, in percent of one core.
    pub cpu_percent: f32,
    /// Free bytes on the file system that holds the state directory.
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    /// The hottest CPU or SoC sensor, if any is readable.
    pub soc_temp_celsius: Option<f32>,
    /// Logical cores, so CPU percent can be read as a share of the box.
    pub cores: usize,
}

/// Keeps sysinfo's handles between readings, because CPU use is a difference.
#[derive(Debug)]
pub struct SystemSampler {
    // Each is absent where the platform cannot give it; readings then stay zero.
    system: Option<System>,
    disks: Option<Disks>,
    components: Option<Components>,
    pid: Option<Pid>,
    state_dir: PathBuf,
}

impl SystemSampler {
    pub fn new(state_dir: &Path) -> Self {
        SystemSampler {
            system: System::new().ok(),
            disks: Disks::new_with_refreshed_list().ok(),
            components: Components::new_with_refreshed_list().ok(),
            pid: sysinfo::get_current_pid().ok(),
            state_dir: state_dir.canonicalize().unwrap_or_else(|_| state_dir.to_path_buf()),
        }
    }

    pub fn sample(&mut self) -> SystemSnapshot {
        let mut snap = SystemSnapshot {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ..SystemSnapshot::default()
        };
        if let (Some(pid), Some(system)) = (self.pid, self.system.as_mut()) {
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
            if let Some(process) = system.process(pid) {
                snap.rss_bytes = process.memory();
                snap.cpu_percent = process.cpu_usage();
            }
        }
        if let Some(disks) = self.disks.as_mut() {
            disks.refresh(true);
            if let Some((free, total)) = disk_space(disks, &self.state_dir) {
                snap.disk_free_bytes = free;
                snap.disk_total_bytes = total;
            }
        }
        if let Some(components) = self.components.as_mut() {
            components.refresh(true);
            snap.soc_temp_celsius = components
                .iter()
                .filter(|c| is_soc_sensor(c.label()))
                .filter_map(|c| c.temperature())
                .filter(|t| t.is_finite())
                .reduce(f32::max);
        }
        snap
    }
}

/// Free and total bytes of the mount that holds `path` (the longest matching mount point).
pub(crate) fn disk_space(disks: &Disks, path: &Path) -> Option<(u64, u64)> {
    disks
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| (d.available_space(), d.total_space()))
}

/// The free share (0 to 1) of the file system that holds `path`, read now with
/// `statvfs` (sysinfo's disk list leaves out tmpfs and overlay mounts, so a state
/// directory on one would be read as the root disk); None if unknown.
pub fn disk_free_share(path: &Path) -> Option<f64> {
    let st = rustix::fs::statvfs(path).ok()?;
    (st.f_blocks > 0).then(|| st.f_bavail as f64 / st.f_blocks as f64)
}

/// Raspberry Pi reports `cpu_thermal`, Jetson `CPU-therm`/`soc`, x86 `coretemp`/`k10temp`.
fn is_soc_sensor(label: &str) -> bool {
    let label = label.to_ascii_lowercase();
    ["cpu", "soc", "core", "package", "k10temp", "thermal"].iter().any(|needle| label.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_share_is_read_for_the_exact_file_system() {
        let share = disk_free_share(Path::new("/dev/shm")).unwrap();
        assert!((0.0..=1.0).contains(&share));
        assert_eq!(disk_free_share(Path::new("/nonexistent/dir")), None);
    }

    #[test]
    fn reads_this_process_and_its_disk() {
        let dir = std::env::temp_dir();
        let mut sampler = SystemSampler::new(&dir);
        let snap = sampler.sample();
        assert!(snap.rss_bytes > 1024 * 1024, "rss {}", snap.rss_bytes);
        assert!(snap.disk_total_bytes > 0 && snap.disk_free_bytes <= snap.disk_total_bytes);
        assert!(snap.cores >= 1);
    }

    #[test]
    fn recognises_common_soc_sensor_labels() {
        assert!(is_soc_sensor("cpu_thermal temp1"));
        assert!(is_soc_sensor("CPU-therm"));
        assert!(is_soc_sensor("coretemp Package id 0"));
        assert!(!is_soc_sensor("nvme Composite"));
    }
}
