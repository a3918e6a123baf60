//! Resource quantities as quota and limit ranges count them: exact values in nano-units with the
//! format of the text they came from, added and compared exactly, and printed in canonical form
//! ("1500m", "128Mi", "2"), as upstream's resource.Quantity prints them.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// How a quantity is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Powers of 1024: Ki, Mi, Gi, ...
    BinarySi,
    /// Powers of 1000: m, k, M, G, ...
    DecimalSi,
    /// Scientific: 1e3.
    DecimalExponent,
}

/// An exact amount (nano-units) and the format it prints in.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

/// Resource names to quantities, sorted by name (a ResourceList).
pub type ResourceList = BTreeMap<String, Quantity>;

const NANO: i128 = 1_000_000_000;
/// Beyond this many nano-units a quantity is refused (far above anything a cluster holds).
const LIMIT: i128 = 1i128 << 120;

impl PartialEq for Quantity {
    fn eq(&self, o: &Self) -> bool {
        self.nanos == o.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Quantity {
    fn cmp(&self, o: &Self) -> Ordering {
        self.nanos.cmp(&o.nanos)
    }
}

impl Quantity {
    /// Zero, printed "0".
    pub const ZERO: Quantity = Quantity { nanos: 0, format: Format::DecimalSi };

    /// An integer count ("1", "3").
    pub fn count(n: i64) -> Quantity {
        Quantity { nanos: i128::from(n) * NANO, format: Format::DecimalSi }
    }

    /// Parses a quantity ("100m", "1.5", "128Mi", "1e3", "2G"); None if it is not one. Values
    /// finer than a nano-unit round up, as upstream's do.
    pub fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let (negative, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let split = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
        let (num, suffix) = body.split_at(split);
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let digits = format!("{int_part}{frac_part}");
        if digits.len() > 36 {
            return None;
        }
        let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
        let scale = frac_part.len() as i32;
        let (format, base, exp): (Format, i128, i32) = match suffix {
            "" => (Format::DecimalSi, 10, 0),
            "n" => (Format::DecimalSi, 10, -9),
            "u" => (Format::DecimalSi, 10, -6),
            "m" => (Format::DecimalSi, 10, -3),
            "k" => (Format::DecimalSi, 10, 3),
            "M" => (Format::DecimalSi, 10, 6),
            "G" => (Format::DecimalSi, 10, 9),
            "T" => (Format::DecimalSi, 10, 12),
            "P" => (Format::DecimalSi, 10, 15),
            "E" => (Format::DecimalSi, 10, 18),
            "Ki" => (Format::BinarySi, 1024, 1),
            "Mi" => (Format::BinarySi, 1024, 2),
            "Gi" => (Format::BinarySi, 1024, 3),
            "Ti" => (Format::BinarySi, 1024, 4),
            "Pi" => (Format::BinarySi, 1024, 5),
            "Ei" => (Format::BinarySi, 1024, 6),
            e if e.len() > 1 && e.starts_with(['e', 'E']) => {
                let n: i32 = e[1..].parse().ok()?;
                if !(-40..=40).contains(&n) {
                    return None;
                }
                (Format::DecimalExponent, 10, n)
            }
            _ => return None,
        };
        // value = mantissa * base^exp / 10^scale, in nano-units.
        let mut num = mantissa.checked_mul(NANO)?;
        let mut den: i128 = 10i128.checked_pow(scale as u32)?;
        if exp >= 0 {
            num = num.checked_mul(base.checked_pow(exp as u32)?)?;
        } else {
            den = den.checked_mul(base.checked_pow((-exp) as u32)?)?;
        }
        let mut nanos = num / den + i128::from(num % den != 0);
        if nanos > LIMIT {
            return None;
        }
        if negative {
            nanos = -nanos;
        }
        Some(Quantity { nanos, format })
    }

    /// The amount in milli-units, rounded up.
    pub fn milli(&self) -> i128 {
        ceil_div(self.nanos, 1_000_000)
    }

    /// The amount in whole units, rounded up.
    pub fn value(&self) -> i128 {
        ceil_div(self.nanos, NANO)
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The sum; a zero left side takes the right side's format (as upstream's Add).
    pub fn add(&self, o: &Quantity) -> Quantity {
        let format = if self.nanos == 0 { o.format } else { self.format };
        Quantity { nanos: self.nanos.saturating_add(o.nanos), format }
    }

    /// The difference; a zero left side takes the right side's format.
    pub fn sub(&self, o: &Quantity) -> Quantity {
        let format = if self.nanos == 0 { o.format } else { self.format };
        Quantity { nanos: self.nanos.saturating_sub(o.nanos), format }
    }

    /// The amount in whole units of a ratio (limit over request).
    pub fn ratio_to(&self, o: &Quantity) -> f64 {
        self.nanos as f64 / o.nanos as f64
    }
}

impl std::fmt::Display for Quantity {
    /// The canonical form upstream prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let whole = abs % (NANO as u128) == 0;
        if self.format == Format::BinarySi && whole && abs >= 1024 * NANO as u128 {
            let mut units = abs / NANO as u128;
            let mut i = 0;
            while i < 6 && units % 1024 == 0 {
                units /= 1024;
                i += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i];
            return write!(f, "{sign}{units}{suffix}");
        }
        // Decimal: the largest exponent (a multiple of 3, from -9) keeping the mantissa whole.
        let mut mantissa = abs;
        let mut exp: i32 = -9;
        while exp < 18 && mantissa % 1000 == 0 {
            mantissa /= 1000;
            exp += 3;
        }
        if self.format == Format::DecimalExponent {
            return match exp {
                0 => write!(f, "{sign}{mantissa}"),
                e => write!(f, "{sign}{mantissa}e{e}"),
            };
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{sign}{mantissa}{suffix}")
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 {
        q + 1
    } else {
        q
    }
}

/// Parses a JSON map of quantities; entries that are not quantities are skipped.
pub fn list_from(v: Option<&serde_json::Value>) -> ResourceList {
    let mut out = ResourceList::new();
    for (k, q) in v.and_then(serde_json::Value::as_object).into_iter().flatten() {
        let parsed = match q {
            serde_json::Value::String(s) => Quantity::parse(s),
            serde_json::Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => None,
        };
        if let Some(p) = parsed {
            out.insert(k.clone(), p);
        }
    }
    out
}

/// A ResourceList as a JSON map of canonical strings.
pub fn list_to_json(l: &ResourceList) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> =
        l.iter().map(|(k, q)| (k.clone(), serde_json::Value::String(q.to_string()))).collect();
    serde_json::Value::Object(map)
}

/// Adds `b` into `a`, name by name.
pub fn add_into(a: &mut ResourceList, b: &ResourceList) {
    for (k, q) in b {
        let sum = a.get(k).map(|x| x.add(q)).unwrap_or(*q);
        a.insert(k.clone(), sum);
    }
}

/// "name=value" pairs, sorted by name, joined by ","; as upstream's quota messages print them.
pub fn pretty(l: &ResourceList) -> String {
    l.iter().map(|(k, q)| format!("{k}={q}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("100m", "100m"),
            ("1", "1"),
            ("1.5", "1500m"),
            ("2000m", "2"),
            ("128Mi", "128Mi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("512", "512"),
            ("1000", "1k"),
            ("1200", "1200"),
            ("1e3", "1e3"),
            ("0.5Gi", "512Mi"),
            ("0", "0"),
            ("1k", "1k"),
        ];
        for (input, want) in cases {
            let q = Quantity::parse(input).unwrap_or_else(|| panic!("{input} parses"));
            assert_eq!(q.to_string(), want, "{input}");
        }
        for bad in ["", "abc", "1x", "--1", "1.2.3", "Mi"] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn arithmetic_keeps_the_first_format() {
        let a = Quantity::parse("64Mi").unwrap();
        assert_eq!(a.add(&a).to_string(), "128Mi");
        assert_eq!(Quantity::ZERO.add(&a).to_string(), "64Mi");
        let c = Quantity::parse("100m").unwrap().add(&Quantity::parse("1").unwrap());
        assert_eq!(c.to_string(), "1100m");
        assert!(Quantity::parse("1Gi").unwrap() > Quantity::parse("1G").unwrap());
        assert_eq!(Quantity::parse("1").unwrap(), Quantity::parse("1000m").unwrap());
        assert_eq!(Quantity::parse("1.5").unwrap().milli(), 1500);
        assert_eq!(Quantity::parse("1500m").unwrap().value(), 2);
    }
}
