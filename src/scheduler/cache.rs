//! The scheduler's cache of nodes and of what is placed on them: requested resources, host ports
//! and pod counts per node, from bound pods the informer reports and from pods the scheduler has
//! assumed onto a node while their binding is in flight (assume-on-bind), so the next pod is
//! placed against up-to-date allocations without waiting for the watch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use super::resources::{node_allocatable, pod_requests, Resources};

/// A host port a pod uses: (protocol, host IP, port).
pub type HostPort = (String, String, i32);

/// One node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub allocatable: Resources,
    /// The sum of the requests of the pods on the node.
    pub requested: Resources,
    /// The same with the scoring defaults for containers without requests.
    pub non_zero_requested: Resources,
    pub used_ports: Vec<HostPort>,
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> NodeInfo {
        NodeInfo {
            allocatable: node_allocatable(&node),
            node,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            used_ports: vec![],
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }
}

/// What a placed pod adds to its node.
#[derive(Clone, Debug)]
struct Placement {
    node: String,
    requests: Resources,
    non_zero: Resources,
    ports: Vec<HostPort>,
    assumed: bool,
}

/// Nodes by name and pods by uid.
#[derive(Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, Placement>,
    /// Pods placed on nodes the cache does not know yet.
    orphans: HashSet<String>,
}

impl Cache {
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    /// Whether a pod (by uid) is assumed or bound in the cache.
    pub fn is_placed(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Adds or replaces a node, keeping what is placed on it.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        match self.index.get(&name) {
            Some(i) => {
                let info = &mut self.nodes[*i];
                info.allocatable = node_allocatable(&node);
                info.node = node;
            }
            None => {
                self.index.insert(name.clone(), self.nodes.len());
                self.nodes.push(NodeInfo::new(node));
                let orphans: Vec<String> = self.orphans.iter().cloned().collect();
                for uid in orphans {
                    if let Some(p) = self.pods.get(&uid).cloned().filter(|p| p.node == name) {
                        self.orphans.remove(&uid);
                        self.apply(&p, 1);
                    }
                }
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name().to_string(), i);
        }
        for (uid, p) in &self.pods {
            if p.node == name {
                self.orphans.insert(uid.clone());
            }
        }
    }

    /// Places a pod on `node` before its binding is confirmed.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        self.place(pod, node, true);
    }

    /// Undoes [`assume`](Cache::assume) after a failed binding (a no-op once the informer has
    /// confirmed the pod).
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove_pod(uid);
        }
    }

    /// Records what the informer says about a pod: a bound, non-terminal pod is placed on its
    /// node; anything else is removed.
    pub fn update_pod(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
            if !node.is_empty() || !self.pods.get(&uid).is_some_and(|p| p.assumed) {
                self.remove_pod(&uid);
            }
            return;
        }
        match self.pods.get_mut(&uid) {
            Some(p) if p.node == node => p.assumed = false,
            _ => self.place(pod, &node, false),
        }
    }

    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(p) = self.pods.remove(uid) {
            if !self.orphans.remove(uid) {
                self.apply(&p, -1);
            }
        }
    }

    fn place(&mut self, pod: &Pod, node: &str, assumed: bool) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.remove_pod(&uid);
        let p = Placement {
            node: node.to_string(),
            requests: pod_requests(pod, false),
            non_zero: pod_requests(pod, true),
            ports: host_ports(pod),
            assumed,
        };
        if self.index.contains_key(node) {
            self.apply(&p, 1);
        } else {
            self.orphans.insert(uid.clone());
        }
        self.pods.insert(uid, p);
    }

    fn apply(&mut self, p: &Placement, sign: i32) {
        let Some(i) = self.index.get(&p.node) else { return };
        let info = &mut self.nodes[*i];
        if sign > 0 {
            info.requested.add(&p.requests);
            info.non_zero_requested.add(&p.non_zero);
            info.used_ports.extend(p.ports.iter().cloned());
        } else {
            info.requested.sub(&p.requests);
            info.non_zero_requested.sub(&p.non_zero);
            for port in &p.ports {
                if let Some(j) = info.used_ports.iter().position(|u| u == port) {
                    info.used_ports.swap_remove(j);
                }
            }
        }
    }
}

/// The host ports a pod's containers ask for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else { return vec![] };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| {
            (
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| "0.0.0.0".into()),
                p.host_port.unwrap_or(0),
            )
        })
        .collect()
}
