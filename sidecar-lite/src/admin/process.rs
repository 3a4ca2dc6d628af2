//! Process gauges read at scrape time: resident memory and CPU seconds, from `/proc` on Linux.

/// Records `process_resident_memory_bytes` and `process_cpu_seconds_total` (Linux only; a
/// no-op elsewhere).
pub(super) fn record() {
    if let Some(rss) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    if let Some(cpu) = cpu_seconds() {
        metrics::gauge!("process_cpu_seconds_total").set(cpu);
    }
}

/// VmRSS from `/proc/self/status`.
pub(super) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// utime + stime from `/proc/self/stat`, in seconds (clock ticks are 100 per second on Linux).
pub(super) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields resume after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn reads_this_process() {
        assert!(super::resident_bytes().unwrap() > 1024 * 1024);
        assert!(super::cpu_seconds().unwrap() >= 0.0);
    }
}
