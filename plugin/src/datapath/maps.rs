//! Typed access to the pinned maps, for the plugin and the operator commands.
use aya::maps::{Map, MapData, PerCpuArray};
use flatbridge_common::{Counter, Verdict, map_name};

use super::{Datapath, DatapathError};

/// A verdict and its packets and bytes summed over all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictCount {
    pub verdict: Verdict,
    pub total: Counter,
}

impl Datapath {
    fn open_map(&self, name: &str) -> Result<MapData, DatapathError> {
        let path = self.layout().map(name);
        MapData::from_pin(&path).map_err(|error| DatapathError::Map {
            path,
            source: Box::new(error),
        })
    }

    /// The datapath's counters, one line per verdict, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<VerdictCount>, DatapathError> {
        let path = self.layout().map(map_name::COUNTERS);
        let map_error = |error| DatapathError::Map {
            path: path.clone(),
            source: Box::new(error),
        };
        let counters: PerCpuArray<MapData, Counter> =
            PerCpuArray::try_from(Map::PerCpuArray(self.open_map(map_name::COUNTERS)?)).map_err(map_error)?;
        Verdict::ALL
            .iter()
            .map(|&verdict| {
                let per_cpu = counters.get(&(verdict as u32), 0).map_err(map_error)?;
                let total = per_cpu.iter().fold(Counter::default(), |sum, cpu| Counter {
                    packets: sum.packets + cpu.packets,
                    bytes: sum.bytes + cpu.bytes,
                });
                Ok(VerdictCount { verdict, total })
            })
            .collect()
    }
}
