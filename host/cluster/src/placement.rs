//! Where regions run: what a pipelined region needs (its operators' `resources`
//! times their parallelism), and a placement of regions on workers with room.
//! Sans IO; the coordinator calls it with what it knows.

use std::collections::BTreeMap;

use crate::protocol::{Capacity, ResourceNeeds};

/// What one region needs, summed over its operators' subtasks.
pub fn region_needs(operators: impl IntoIterator<Item = (ResourceNeeds, u32)>) -> Capacity {
    operators
        .into_iter()
        .map(|(needs, parallelism)| Capacity {
            cores: needs.cores.saturating_mul(parallelism),
            memory_mb: needs.memory_mb.saturating_mul(u64::from(parallelism)),
            gpu: needs.gpu.saturating_mul(parallelism),
        })
        .sum()
}

pub(crate) fn fits(need: &Capacity, free: &Capacity) -> bool {
    need.cores <= free.cores && need.memory_mb <= free.memory_mb && need.gpu <= free.gpu
}

pub(crate) fn take(free: &mut Capacity, need: &Capacity) {
    free.cores = free.cores.saturating_sub(need.cores);
    free.memory_mb = free.memory_mb.saturating_sub(need.memory_mb);
    free.gpu = free.gpu.saturating_sub(need.gpu);
}

pub fn describe(c: &Capacity) -> String {
    format!("cores={}, memory_mb={}, gpu={}", c.cores, c.memory_mb, c.gpu)
}

/// A worker as placement sees it: what it has free and how many regions it runs.
#[derive(Debug, Clone)]
pub struct Slot {
    pub free: Capacity,
    pub regions: usize,
}

/// What [`place`] decided: `(region, worker)` for each placed region, and `(region, why)`
/// for each that fits nowhere.
#[derive(Debug, Default)]
pub struct Placement {
    pub placed: Vec<(String, String)>,
    pub unplaced: Vec<(String, String)>,
}

/// Places each `(region, need)` on a worker of `workers` with room, largest needs first,
/// each on the worker with the fewest regions (then the most free memory), so regions
/// spread across the cluster. Returns the placement of those that fit and, for each that
/// does not, why (naming the region, its needs and what the workers have free).
/// `workers` is updated with what was taken.
pub fn place(regions: &[(String, Capacity)], workers: &mut BTreeMap<String, Slot>) -> Placement {
    let mut order: Vec<&(String, Capacity)> = regions.iter().collect();
    order.sort_by_key(|(_, need)| std::cmp::Reverse((need.gpu, need.memory_mb, need.cores)));
    let mut placed = Vec::new();
    let mut unplaced = Vec::new();
    for (region, need) in order {
        let best = workers
            .iter()
            .filter(|(_, slot)| fits(need, &slot.free))
            .min_by(|a, b| a.1.regions.cmp(&b.1.regions).then(b.1.free.memory_mb.cmp(&a.1.free.memory_mb)))
            .map(|(id, _)| id.clone());
        match best {
            Some(id) => {
                if let Some(slot) = workers.get_mut(&id) {
                    take(&mut slot.free, need);
                    slot.regions += 1;
                }
                placed.push((region.clone(), id));
            }
            None => {
                let free = if workers.is_empty() {
                    "no worker has joined".to_owned()
                } else {
                    workers
                        .iter()
                        .map(|(id, s)| format!("{id} has {}", describe(&s.free)))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                unplaced.push((region.clone(), format!("region `{region}` needs {}: {free}", describe(need))));
            }
        }
    }
    Placement { placed, unplaced }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(cores: u32, memory_mb: u64, gpu: u32) -> Capacity {
        Capacity { cores, memory_mb, gpu }
    }

    #[test]
    fn regions_spread_and_gpus_go_where_they_are() {
        let mut workers = BTreeMap::from([
            ("w-1".to_owned(), Slot { free: cap(4, 4096, 0), regions: 0 }),
            ("w-2".to_owned(), Slot { free: cap(4, 4096, 1), regions: 0 }),
            ("w-3".to_owned(), Slot { free: cap(4, 4096, 0), regions: 0 }),
        ]);
        let regions = vec![
            ("a".to_owned(), cap(1, 100, 0)),
            ("gpu".to_owned(), cap(1, 100, 1)),
            ("b".to_owned(), cap(1, 100, 0)),
        ];
        let Placement { placed, unplaced } = place(&regions, &mut workers);
        assert!(unplaced.is_empty(), "{unplaced:?}");
        let on: BTreeMap<_, _> = placed.into_iter().collect();
        assert_eq!(on["gpu"], "w-2");
        assert_ne!(on["a"], on["b"]);
        assert_ne!(on["a"], "w-2");
        assert_eq!(workers["w-2"].free.gpu, 0);
    }

    #[test]
    fn a_region_that_fits_nowhere_is_named_with_what_is_free() {
        let mut workers = BTreeMap::from([("w-1".to_owned(), Slot { free: cap(2, 1024, 0), regions: 0 })]);
        let Placement { placed, unplaced } = place(&[("infer".to_owned(), cap(1, 512, 2))], &mut workers);
        assert!(placed.is_empty());
        assert_eq!(unplaced[0].0, "infer");
        assert!(unplaced[0].1.contains("needs cores=1, memory_mb=512, gpu=2"), "{}", unplaced[0].1);
        assert!(unplaced[0].1.contains("w-1 has cores=2, memory_mb=1024, gpu=0"), "{}", unplaced[0].1);
    }

    #[test]
    fn needs_add_up_over_parallelism() {
        let gpu = ResourceNeeds { cores: 1, memory_mb: 256, gpu: 1 };
        let cpu = ResourceNeeds { cores: 2, memory_mb: 0, gpu: 0 };
        assert_eq!(region_needs([(gpu, 2), (cpu, 3)]), cap(8, 512, 2));
    }
}
