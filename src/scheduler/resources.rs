//! Resource amounts as the scheduler counts them: Kubernetes quantities parsed into integer
//! milli-units, a pod's effective requests (containers, init containers, overhead) and a node's
//! allocatable amounts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The CPU (milli-cores) counted for a container without a CPU request when scoring (upstream's
/// non-zero default).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory (bytes) counted for a container without a memory request when scoring.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of the resources the scheduler checks, in milli-units (cpu in milli-cores, memory and
/// ephemeral-storage in milli-bytes) and the pod count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    /// Extended resources (nvidia.com/gpu ...), in milli-units.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Each resource the larger of the two.
    fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    fn from_map(map: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in map.into_iter().flatten() {
            let v = parse_milli(&q.0).unwrap_or(0);
            match name.as_str() {
                "cpu" => r.milli_cpu = v,
                "memory" => r.memory = v,
                "ephemeral-storage" => r.ephemeral_storage = v,
                "pods" => r.pods = v / 1000,
                other if other.contains('/') || other.starts_with("hugepages-") => {
                    r.scalar.insert(other.to_string(), v);
                }
                _ => {}
            }
        }
        r
    }
}

/// A pod's requests: the larger of the sum over containers and each init container, plus the
/// pod overhead; `pods` is 1. With `non_zero`, containers without a cpu or memory request count
/// the scoring defaults.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else { return Resources { pods: 1, ..Default::default() } };
    let container = |c: &Container| {
        let mut r = Resources::from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        if r.milli_cpu == 0 && r.memory == 0 {
            // Requests default to limits (the API does this too; be safe with older objects).
            let lim = Resources::from_map(c.resources.as_ref().and_then(|r| r.limits.as_ref()));
            r.milli_cpu = lim.milli_cpu;
            r.memory = lim.memory;
        }
        if non_zero {
            if r.milli_cpu == 0 {
                r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
            }
            if r.memory == 0 {
                r.memory = DEFAULT_MEMORY_REQUEST * 1000;
            }
        }
        r
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container(c));
    }
    for c in spec.init_containers.iter().flatten() {
        total.max_with(&container(c));
    }
    if let Some(overhead) = spec.overhead.as_ref() {
        total.add(&Resources::from_map(Some(overhead)));
    }
    total.pods = 1;
    total
}

/// A node's allocatable resources (capacity when allocatable is absent).
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let map =
        status.and_then(|s| s.allocatable.as_ref()).or(status.and_then(|s| s.capacity.as_ref()));
    Resources::from_map(map)
}

/// Parses a quantity ("100m", "1.5", "128Mi", "1e3", "2G") into milli-units, rounding up.
pub fn parse_milli(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '+' || *c == '-'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let milli = (value * factor * 1000.0).ceil();
    (milli.is_finite() && milli.abs() < 9.2e18).then_some(milli as i64)
}

#[cfg(test)]
mod tests {
    use super::parse_milli;

    #[test]
    fn quantities_parse_to_milli_units() {
        let cases = [
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            ("1Ki", 1_024_000),
            ("256Gi", 274_877_906_944_000),
            ("1e3", 1_000_000),
            ("2k", 2_000_000),
        ];
        for (q, want) in cases {
            assert_eq!(parse_milli(q), Some(want), "{q}");
        }
        assert_eq!(parse_milli("abc"), None);
    }
}
