//! The capacity flags of simulated nodes, shared by `skiff server --simulate-nodes` and
//! `skiff agent --simulate`.

use clap::Args;

use super::CliError;
use crate::agent::simulated::NodeCapacity;
use crate::registry::admission::quantity::Quantity;

#[derive(Clone, Debug, Args)]
pub struct NodeCapacityArgs {
    /// CPU each simulated node offers (a quantity).
    #[arg(long = "simulated-node-cpu", value_name = "QUANTITY", default_value = "32")]
    pub cpu: String,
    /// Memory each simulated node offers (a quantity).
    #[arg(long = "simulated-node-memory", value_name = "QUANTITY", default_value = "256Gi")]
    pub memory: String,
    /// Pods each simulated node takes.
    #[arg(long = "simulated-node-pods", value_name = "N", default_value_t = 110)]
    pub pods: u32,
}

impl NodeCapacityArgs {
    /// The capacity, with each quantity checked.
    pub fn to_capacity(&self) -> Result<NodeCapacity, CliError> {
        let check = |flag: &'static str, value: &str| match Quantity::parse(value) {
            Some(q) if !q.is_zero() && q.milli() > 0 => Ok(value.to_string()),
            _ => Err(CliError::InvalidFlag {
                flag,
                reason: format!("{value:?} is not a positive quantity"),
            }),
        };
        Ok(NodeCapacity {
            cpu: check("--simulated-node-cpu", &self.cpu)?,
            memory: check("--simulated-node-memory", &self.memory)?,
            pods: self.pods,
            ..NodeCapacity::default()
        })
    }
}
