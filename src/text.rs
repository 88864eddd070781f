//! Writing JSON strings, numbers and UTC times straight into a byte buffer,
//! for the paths every refused request takes (its problem document and its
//! audit line), where serde_json's and `fmt`'s general machinery cost more
//! than the rest of the refusal.

/// `text` as a JSON string, byte for byte as serde_json writes it (it
/// escapes only `"`, `\` and control characters below U+0020).
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail, and a &str always serialises.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// `n` in decimal, zero-padded to at least `width` digits.
pub fn push_number(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    let mut rest = n;
    while rest > 0 {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let start = start.min(digits.len() - width.clamp(1, digits.len()));
    out.extend_from_slice(&digits[start..]);
}

/// `secs` after the Unix epoch in UTC as RFC 3339, with `fraction` written
/// in `digits` digits after the seconds: `2026-11-28T06:22:22.123456Z`.
pub fn push_utc(out: &mut Vec<u8>, secs: u64, fraction: u64, digits: usize) {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let parts = [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (of_day / 3600, 2, b':'),
        (of_day / 60 % 60, 2, b':'),
        (of_day % 60, 2, b'.'),
        (fraction, digits, b'Z'),
    ];
    for (n, width, then) in parts {
        push_number(out, n, width);
        out.push(then);
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01
/// (H. Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_are_decimal_and_padded() {
        let mut out = Vec::new();
        for (n, width) in [
            (0, 1),
            (7, 1),
            (10, 1),
            (401, 1),
            (u64::MAX, 1),
            (5, 2),
            (123, 6),
            (0, 4),
        ] {
            push_number(&mut out, n, width);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 7 10 401 18446744073709551615 05 000123 0000 "
        );
    }

    proptest! {
        #[test]
        fn strings_are_written_as_serde_json_writes_them(text in any::<String>()) {
            let mut ours = Vec::new();
            push_json_string(&mut ours, &text);
            prop_assert_eq!(ours, serde_json::to_vec(&text).unwrap());
        }

        #[test]
        fn plain_text_too(text in "[ -~]{0,40}") {
            let mut ours = Vec::new();
            push_json_string(&mut ours, &text);
            prop_assert_eq!(ours, serde_json::to_vec(&text).unwrap());
        }
    }
}
