//! One file per resource with its Strategy (defaults, validation, status rules, selectable
//! fields, table columns) and, where a second served version exists, its conversion.

pub mod configmaps;
pub mod crds;
pub mod cronjobs;
pub mod daemonsets;
pub mod deployments;
pub mod events;
pub mod hpa;
pub mod ipaddresses;
pub mod jobs;
pub mod limitranges;
pub mod misc;
pub mod namespaces;
pub mod nodeports;
pub mod nodes;
pub mod pods;
pub mod podspec;
pub mod rbac;
pub mod replicasets;
pub mod replicationcontrollers;
pub mod secrets;
pub mod services;
pub mod statefulsets;
pub mod volumes;
