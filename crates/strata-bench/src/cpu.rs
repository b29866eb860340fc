//! CPU time, for figures per request or per event.

use std::time::Duration;

/// This process's CPU time so far (user + system, every thread), from `/proc/self/stat`;
/// zero where that cannot be read.
pub fn process_cpu_time() -> Duration {
    stat_cpu_time(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// The CPU time (user + system) in the text of a `/proc/<pid>/stat` file; zero for text that
/// is not one.
pub fn stat_cpu_time(stat: &str) -> Duration {
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_a_command_name_with_spaces() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0";
        assert_eq!(stat_cpu_time(stat), Duration::from_millis(1_750));
        assert_eq!(stat_cpu_time("garbage"), Duration::ZERO);
    }
}
