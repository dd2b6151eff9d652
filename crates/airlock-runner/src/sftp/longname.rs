//! `ls -l` style long names (as OpenSSH's sftp-server `ls_file`).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;

use crate::passwd::NameMaps;

/// `ls -l` style mode string (like BSD strmode, without the trailing space).
pub fn mode_string(mode: u32) -> String {
    let t = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(match (mode & 0o100 != 0, mode & 0o4000 != 0) {
        (true, true) => 's',
        (false, true) => 'S',
        (true, false) => 'x',
        (false, false) => '-',
    });
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(match (mode & 0o010 != 0, mode & 0o2000 != 0) {
        (true, true) => 's',
        (false, true) => 'S',
        (true, false) => 'x',
        (false, false) => '-',
    });
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(match (mode & 0o001 != 0, mode & 0o1000 != 0) {
        (true, true) => 't',
        (false, true) => 'T',
        (true, false) => 'x',
        (false, false) => '-',
    });
    s
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A civil date and time of day (UTC), to the minute.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    /// 1-12.
    month: usize,
    day: i64,
    hour: i64,
    minute: i64,
}

/// The civil date (UTC) of a unix time.
fn civil(t: i64) -> Civil {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    Civil {
        year: y,
        month: usize::try_from(m).unwrap_or(1),
        day: d,
        hour: secs / 3600,
        minute: (secs % 3600) / 60,
    }
}

/// OpenSSH `ls_file` style long name:
/// `-rw-r--r--    1 work     work         1234 Jan  5 12:00 name`.
pub fn longname(name: &str, m: &Metadata, names: &NameMaps, now: i64) -> String {
    let user = names.user(m.uid());
    let group = names.group(m.gid());
    let mtime = m.mtime();
    let Civil {
        year: y,
        month: mo,
        day: d,
        hour: h,
        minute: mi,
    } = civil(mtime);
    let month = MONTHS[(mo.clamp(1, 12)) - 1];
    const SIX_MONTHS: i64 = 365 * 24 * 3600 / 2;
    let date = if mtime > now - SIX_MONTHS && mtime <= now + 3600 {
        format!("{month} {d:>2} {h:02}:{mi:02}")
    } else {
        format!("{month} {d:>2}  {y}")
    };
    format!(
        "{}  {:>3} {:<8} {:<8} {:>8} {} {}",
        mode_string(m.mode()),
        m.nlink(),
        user,
        group,
        m.size(),
        date,
        name
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o010600), "prw-------");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
    }

    #[test]
    fn dates() {
        let at = |year, month, day, hour, minute| Civil {
            year,
            month,
            day,
            hour,
            minute,
        };
        assert_eq!(civil(0), at(1970, 1, 1, 0, 0));
        assert_eq!(civil(1_700_000_000), at(2023, 11, 14, 22, 13));
    }
}
