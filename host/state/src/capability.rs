//! `OperatorState` as the `state` capability (`flumen_types::StateBackend`):
//! a guest's calls go straight to the store, each value charged to the
//! instance's host memory budget before it is copied out, and every store
//! error turned into the fault the guest sees (a limit, or internal).

use flumen_types::{HostMemoryCharge, StateBackend, StateFault};

use crate::{OperatorState, StateError};

/// Charges each value the store is about to copy to the instance's host memory budget.
fn charging(mem: &mut HostMemoryCharge) -> impl FnMut(usize) -> Result<(), StateError> + '_ {
    |n| mem.grow(n as u64).map_err(|e| StateError::Limit(e.to_string()))
}

fn fault(e: StateError) -> StateFault {
    match e {
        StateError::Limit(message) => StateFault { limit: true, message },
        other => StateFault::internal(other.to_string()),
    }
}

impl StateBackend for OperatorState {
    fn value_get(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Option<Vec<u8>>, StateFault> {
        self.value_get_admitted(name, key, &mut charging(mem)).map_err(fault)
    }
    fn value_get_many(
        &mut self,
        name: &str,
        keys: &[Vec<u8>],
        mem: &mut HostMemoryCharge,
    ) -> Result<Vec<Option<Vec<u8>>>, StateFault> {
        self.value_get_many_admitted(name, keys, &mut charging(mem)).map_err(fault)
    }
    fn value_set(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<(), StateFault> {
        self.value_set(name, key, value).map_err(fault)
    }
    fn value_set_many(&mut self, name: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateFault> {
        self.value_set_many(name, entries).map_err(fault)
    }
    fn value_delete(&mut self, name: &str, key: &[u8]) -> Result<(), StateFault> {
        self.value_delete(name, key).map_err(fault)
    }
    fn list_get(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Vec<Vec<u8>>, StateFault> {
        self.list_get_admitted(name, key, &mut charging(mem)).map_err(fault)
    }
    fn list_append(&mut self, name: &str, key: &[u8], item: &[u8]) -> Result<(), StateFault> {
        self.list_append(name, key, item).map_err(fault)
    }
    fn list_clear(&mut self, name: &str, key: &[u8]) -> Result<(), StateFault> {
        self.list_clear(name, key).map_err(fault)
    }
    fn map_get(
        &mut self,
        name: &str,
        key: &[u8],
        field: &[u8],
        mem: &mut HostMemoryCharge,
    ) -> Result<Option<Vec<u8>>, StateFault> {
        self.map_get_admitted(name, key, field, &mut charging(mem)).map_err(fault)
    }
    fn map_put(&mut self, name: &str, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), StateFault> {
        self.map_put(name, key, field, value).map_err(fault)
    }
    fn map_remove(&mut self, name: &str, key: &[u8], field: &[u8]) -> Result<(), StateFault> {
        self.map_remove(name, key, field).map_err(fault)
    }
    fn map_entries(
        &mut self,
        name: &str,
        key: &[u8],
        mem: &mut HostMemoryCharge,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateFault> {
        self.map_entries_admitted(name, key, &mut charging(mem)).map_err(fault)
    }
}
