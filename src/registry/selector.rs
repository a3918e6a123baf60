//! Label and field selectors: parsing the query-string syntax, converting a metav1.LabelSelector,
//! and matching objects.

use serde_json::Value;

use super::validation;

/// What is wrong with a selector string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Label(String),
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Field { selector: String, term: String },
    #[error("{0}")]
    Invalid(String),
}

/// One requirement's operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One label requirement: key, operator and values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// A parsed label selector: every requirement must hold. Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
    /// A metav1.LabelSelector that was null selects nothing.
    pub nothing: bool,
}

/// One field requirement (only equality and inequality exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl LabelSelector {
    /// Parses the labelSelector query syntax.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = vec![];
        for term in split_top_level(input) {
            let term = term.trim();
            if term.is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(SelectorError::Label("found ',', expected: identifier".into()));
            }
            requirements.push(parse_requirement(term)?);
        }
        Ok(LabelSelector { requirements, nothing: false })
    }

    /// Converts a metav1.LabelSelector object (matchLabels, matchExpressions). A missing or null
    /// selector selects nothing; an empty one selects everything.
    pub fn from_metav1(sel: Option<&Value>) -> Result<Self, SelectorError> {
        let Some(sel) = sel.filter(|v| !v.is_null()) else {
            return Ok(LabelSelector { requirements: vec![], nothing: true });
        };
        let mut requirements = vec![];
        for (k, v) in super::object::string_map(sel.get("matchLabels")) {
            requirements.push(Requirement {
                key: k.into(),
                op: Op::Equals,
                values: vec![v.into()],
            });
        }
        for expr in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values: Vec<String> = expr
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            let op = match expr.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(SelectorError::Invalid(format!(
                        "{other:?} is not a valid label selector operator"
                    )))
                }
            };
            if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
                return Err(SelectorError::Invalid(
                    "for 'in', 'notin' operators, values set can't be empty".into(),
                ));
            }
            requirements.push(Requirement { key, op, values });
        }
        Ok(LabelSelector { requirements, nothing: false })
    }

    /// Whether the selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && !self.nothing
    }

    /// Whether labels (pairs) satisfy every requirement.
    pub fn matches(&self, labels: &[(&str, &str)]) -> bool {
        if self.nothing {
            return false;
        }
        self.requirements.iter().all(|r| {
            let found = labels.iter().find(|(k, _)| *k == r.key).map(|(_, v)| *v);
            match (&r.op, found) {
                (Op::Equals | Op::In, Some(v)) => r.values.iter().any(|x| x == v),
                (Op::Equals | Op::In, None) => false,
                (Op::NotEquals | Op::NotIn, Some(v)) => !r.values.iter().any(|x| x == v),
                (Op::NotEquals | Op::NotIn, None) => true,
                (Op::Exists, f) => f.is_some(),
                (Op::DoesNotExist, f) => f.is_none(),
                (Op::GreaterThan, Some(v)) => cmp_int(v, &r.values[0]).is_some_and(|o| o.is_gt()),
                (Op::LessThan, Some(v)) => cmp_int(v, &r.values[0]).is_some_and(|o| o.is_lt()),
                (Op::GreaterThan | Op::LessThan, None) => false,
            }
        })
    }

    /// Whether an object's metadata.labels satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&super::object::labels(obj))
    }
}

impl std::fmt::Display for LabelSelector {
    /// The query-string form (as upstream renders a selector in Scale.status.selector).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r.op {
                Op::Equals => format!("{}={}", r.key, r.values[0]),
                Op::NotEquals => format!("{}!={}", r.key, r.values[0]),
                Op::In => format!("{} in ({})", r.key, sorted(&r.values).join(",")),
                Op::NotIn => format!("{} notin ({})", r.key, sorted(&r.values).join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::GreaterThan => format!("{}>{}", r.key, r.values[0]),
                Op::LessThan => format!("{}<{}", r.key, r.values[0]),
            })
            .collect();
        parts.sort();
        f.write_str(&parts.join(","))
    }
}

impl FieldSelector {
    /// Parses the fieldSelector query syntax (`a=b,c!=d`; `\` escapes `,`, `=`, `!`, `\`).
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = vec![];
        for term in split_unescaped(input, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let bad = || SelectorError::Field { selector: input.to_string(), term: term.clone() };
            let (field, op, value) = split_field_term(&term).ok_or_else(bad)?;
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                value: unescape(value),
                negated: op == "!=",
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `lookup(field)` satisfies every requirement.
    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = lookup(&r.field).unwrap_or_default();
            (v == r.value) != r.negated
        })
    }

    /// The value a requirement fixes a field to (`field=value`), if any; lets list narrow its
    /// scan (metadata.name, metadata.namespace).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements.iter().find(|r| r.field == field && !r.negated).map(|r| r.value.as_str())
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn cmp_int(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    Some(a.parse::<i64>().ok()?.cmp(&b.parse::<i64>().ok()?))
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Vec<String> {
    let mut out = vec![];
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in input.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

fn parse_requirement(term: &str) -> Result<Requirement, SelectorError> {
    let err = |m: String| SelectorError::Label(m);
    if let Some(rest) = term.strip_prefix('!') {
        let key = rest.trim();
        check_key(key)?;
        return Ok(Requirement { key: key.into(), op: Op::DoesNotExist, values: vec![] });
    }
    // Set-based: key in (a,b) / key notin (a,b).
    if let Some(open) = term.find('(') {
        let head = term[..open].trim();
        let close =
            term.rfind(')').ok_or_else(|| err(format!("found '', expected: ')' in {term:?}")))?;
        if !term[close + 1..].trim().is_empty() {
            return Err(err(format!(
                "found '{}', expected: ',' or end of string",
                term[close + 1..].trim()
            )));
        }
        let mut words = head.split_whitespace();
        let key = words.next().unwrap_or_default();
        let op = match words.next() {
            Some("in") => Op::In,
            Some("notin") => Op::NotIn,
            Some(other) => {
                return Err(err(format!("found '{other}', expected: in, notin, =, ==, !=, gt, lt")))
            }
            None => return Err(err(format!("found '(', expected: in, notin in {term:?}"))),
        };
        if words.next().is_some() {
            return Err(err(format!("found unexpected text in {term:?}")));
        }
        check_key(key)?;
        let values: Vec<String> = term[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        for v in &values {
            check_value(v)?;
        }
        if values.is_empty() {
            return Err(SelectorError::Invalid(
                "for 'in', 'notin' operators, values set can't be empty".into(),
            ));
        }
        return Ok(Requirement { key: key.into(), op, values });
    }
    for (tok, op) in [
        ("==", Op::Equals),
        ("!=", Op::NotEquals),
        ("=", Op::Equals),
        (">", Op::GreaterThan),
        ("<", Op::LessThan),
    ] {
        if let Some(pos) = term.find(tok) {
            let key = term[..pos].trim();
            let value = term[pos + tok.len()..].trim();
            check_key(key)?;
            if matches!(op, Op::GreaterThan | Op::LessThan) {
                if value.parse::<i64>().is_err() {
                    return Err(SelectorError::Invalid(format!(
                        "for 'Gt', 'Lt' operators, the value must be an integer: {value:?}"
                    )));
                }
            } else {
                check_value(value)?;
            }
            if value.contains(char::is_whitespace) {
                return Err(err(format!("found '{value}', expected: ',' or end of string")));
            }
            return Ok(Requirement { key: key.into(), op, values: vec![value.into()] });
        }
    }
    let key = term.trim();
    if key.contains(char::is_whitespace) {
        let next = key.split_whitespace().nth(1).unwrap_or_default();
        return Err(err(format!("found '{next}', expected: in, notin, =, ==, !=, gt, lt")));
    }
    check_key(key)?;
    Ok(Requirement { key: key.into(), op: Op::Exists, values: vec![] })
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    if key.is_empty() {
        return Err(SelectorError::Label("found '', expected: identifier".into()));
    }
    let errs = validation::qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::Invalid(format!("key: Invalid value: {key:?}: {}", errs.join("; "))))
    }
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    let errs = validation::label_value(value);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::Invalid(format!(
            "values[0]: Invalid value: {value:?}: {}",
            errs.join("; ")
        )))
    }
}

fn split_unescaped(input: &str, sep: char) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

/// Splits `field<op>value` at the first unescaped operator.
fn split_field_term(term: &str) -> Option<(&str, &'static str, &str)> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], "!=", &term[i + 2..]))
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], "==", &term[i + 2..]))
            }
            b'=' => return Some((&term[..i], "=", &term[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_cases() {
        let labels = [("app", "web"), ("tier", "front"), ("n", "5")];
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("app in (db,web),tier", true),
            ("n>3", true),
            ("n<3", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&labels), want, "{sel}");
        }
    }

    #[test]
    fn bad_label_selectors_fail() {
        for sel in ["app in (", "a b", "=x", "app in ()", "app=a b", "-bad=1", "x>y"] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel} should fail");
        }
    }

    #[test]
    fn metav1_selector_converts_and_prints() {
        let s = LabelSelector::from_metav1(Some(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]
        })))
        .unwrap();
        assert_eq!(s.to_string(), "app=web,tier in (a,b)");
        assert!(s.matches(&[("app", "web"), ("tier", "a")]));
        assert!(!LabelSelector::from_metav1(None).unwrap().matches(&[]));
        assert!(LabelSelector::from_metav1(Some(&json!({}))).unwrap().matches(&[]));
    }

    #[test]
    fn field_selector_cases() {
        let s = FieldSelector::parse("metadata.name=a\\,b,status.phase!=Running").unwrap();
        assert_eq!(s.requirements[0].value, "a,b");
        assert!(s.matches(|f| match f {
            "metadata.name" => Some("a,b".into()),
            "status.phase" => Some("Pending".into()),
            _ => None,
        }));
        assert_eq!(s.exact("metadata.name"), Some("a,b"));
        let err = FieldSelector::parse("foo").unwrap_err();
        assert_eq!(err.to_string(), "invalid selector: 'foo'; can't understand 'foo'");
        assert!(FieldSelector::parse("spec.nodeName==").unwrap().matches(|_| None));
    }
}
