//! Operator state for guests: the fjall-backed store of `flumen-state` behind
//! the `state` capability of `flumen-wasm`.

use flumen_state::{OperatorState, StateError};
use flumen_types::HostMemoryCharge;
use flumen_wasm::{StateBackend, StateFault, StateHandle};

/// One subtask's state, as the wasm layer sees it.
#[derive(Debug)]
pub(crate) struct FjallBackend(pub(crate) OperatorState);

impl FjallBackend {
    pub(crate) fn handle(state: OperatorState) -> StateHandle {
        StateHandle::new(Box::new(Self(state)))
    }
}

/// Runs `f` on the concrete store behind `handle` (snapshot, restore, clear).
pub(crate) fn with_store<T>(
    handle: &StateHandle,
    f: impl FnOnce(&mut OperatorState) -> Result<T, StateError>,
) -> Result<T, String> {
    handle
        .with(|backend| {
            let store = backend
                .as_any_mut()
                .downcast_mut::<FjallBackend>()
                .ok_or_else(|| StateFault::internal("state backend is not the fjall store"))?;
            f(&mut store.0).map_err(fault)
        })
        .map_err(|f| f.message)
}

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

impl StateBackend for FjallBackend {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn value_get(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Option<Vec<u8>>, StateFault> {
        self.0.value_get_admitted(name, key, &mut charging(mem)).map_err(fault)
    }
    fn value_get_many(
        &mut self,
        name: &str,
        keys: &[Vec<u8>],
        mem: &mut HostMemoryCharge,
    ) -> Result<Vec<Option<Vec<u8>>>, StateFault> {
        self.0.value_get_many_admitted(name, keys, &mut charging(mem)).map_err(fault)
    }
    fn value_set(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<(), StateFault> {
        self.0.value_set(name, key, value).map_err(fault)
    }
    fn value_set_many(&mut self, name: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateFault> {
        self.0.value_set_many(name, entries).map_err(fault)
    }
    fn value_delete(&mut self, name: &str, key: &[u8]) -> Result<(), StateFault> {
        self.0.value_delete(name, key).map_err(fault)
    }
    fn list_get(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Vec<Vec<u8>>, StateFault> {
        self.0.list_get_admitted(name, key, &mut charging(mem)).map_err(fault)
    }
    fn list_append(&mut self, name: &str, key: &[u8], item: &[u8]) -> Result<(), StateFault> {
        self.0.list_append(name, key, item).map_err(fault)
    }
    fn list_clear(&mut self, name: &str, key: &[u8]) -> Result<(), StateFault> {
        self.0.list_clear(name, key).map_err(fault)
    }
    fn map_get(
        &mut self,
        name: &str,
        key: &[u8],
        field: &[u8],
        mem: &mut HostMemoryCharge,
    ) -> Result<Option<Vec<u8>>, StateFault> {
        self.0.map_get_admitted(name, key, field, &mut charging(mem)).map_err(fault)
    }
    fn map_put(&mut self, name: &str, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), StateFault> {
        self.0.map_put(name, key, field, value).map_err(fault)
    }
    fn map_remove(&mut self, name: &str, key: &[u8], field: &[u8]) -> Result<(), StateFault> {
        self.0.map_remove(name, key, field).map_err(fault)
    }
    fn map_entries(
        &mut self,
        name: &str,
        key: &[u8],
        mem: &mut HostMemoryCharge,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateFault> {
        self.0.map_entries_admitted(name, key, &mut charging(mem)).map_err(fault)
    }
}
