//! What the generator learns about processes from `/proc` (Linux): CPU time and resident
//! memory of itself and of the broker, and its own open-files limit.

use std::io;
use std::time::Duration;

/// Linux reports CPU times in `/proc/*/stat` in clock ticks of `USER_HZ`, which is 100
/// on every architecture (it is part of the kernel ABI, independent of `CONFIG_HZ`).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time a process has used, all its threads together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time in user mode.
    pub user: Duration,
    /// Time in the kernel on the process's behalf.
    pub system: Duration,
}

impl CpuTimes {
    /// The time used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// User plus system time.
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

fn proc_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// CPU times of process `pid`, or of this process for `None`.
pub fn cpu_times(pid: Option<u32>) -> io::Result<CpuTimes> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat"))?;
    parse_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat format"))
}

/// Parses the `utime` and `stime` fields (14 and 15) of a `/proc/PID/stat` line. The
/// command name (field 2) may contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat(stat: &str) -> Option<CpuTimes> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // After the name come state (field 3) ... utime is field 14, so the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = |count: u64| Duration::from_millis(count * 1000 / TICKS_PER_SECOND);
    Some(CpuTimes {
        user: ticks(utime),
        system: ticks(stime),
    })
}

/// Resident memory of process `pid` (or this process) in bytes, from `VmRSS`.
pub fn resident_bytes(pid: Option<u32>) -> io::Result<u64> {
    let status = std::fs::read_to_string(proc_path(pid, "status"))?;
    parse_vm_rss(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line in /proc status"))
}

/// The `VmRSS:   1234 kB` line of `/proc/PID/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// Raises this process's soft limit of open files as far as the hard limit allows and
/// returns the new soft limit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Number of CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |count| count.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(CpuTimes {
                user: Duration::from_millis(2500),
                system: Duration::from_millis(750),
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tmosquitto\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_can_be_observed() {
        assert!(resident_bytes(None).unwrap() > 0);
        assert!(cpu_times(None).is_ok());
        assert!(cores() >= 1);
    }
}
