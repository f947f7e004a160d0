//! The `state` capability as a trait: what a guest's keyed and operator-wide
//! state calls need from the store behind them. `flumen-wasm` calls it (after
//! checking every argument against the limits in this crate); `flumen-state`
//! implements it on its fjall-backed `OperatorState`. Neither knows the other.

use std::sync::{Arc, Mutex};

use crate::HostMemoryCharge;

/// Most keys or entries in one `*-many` state call.
pub const STATE_BATCH_MAX: usize = 1 << 20;

/// Why a state operation failed, as the guest will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFault {
    /// A limit was crossed (the guest can do something about it); otherwise internal.
    pub limit: bool,
    pub message: String,
}

impl StateFault {
    pub fn internal(message: impl Into<String>) -> Self {
        Self { limit: false, message: message.into() }
    }

    pub fn limit(message: impl Into<String>) -> Self {
        Self { limit: true, message: message.into() }
    }
}

/// (key or field, value) pairs as they cross the boundary.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One subtask's state. Every method is called with arguments already
/// checked against the state limits ([`crate::STATE_NAME_BYTES_MAX`],
/// [`crate::STATE_KEY_BYTES_MAX`], [`crate::STATE_VALUE_BYTES_MAX`], [`STATE_BATCH_MAX`]).
///
/// Methods that return values get `mem`, the instance's host memory charge
/// for this call: they must [`HostMemoryCharge::grow`] it by each value's
/// length *before* copying the value out of the store, and stop at the first
/// refusal (a [`StateFault`] with `limit`), so a guest asking for more than
/// its `host_memory_mb` never makes the host hold it.
pub trait StateBackend: Send + 'static {
    fn value_get(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Option<Vec<u8>>, StateFault>;
    fn value_get_many(
        &mut self,
        name: &str,
        keys: &[Vec<u8>],
        mem: &mut HostMemoryCharge,
    ) -> Result<Vec<Option<Vec<u8>>>, StateFault>;
    fn value_set(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<(), StateFault>;
    fn value_set_many(&mut self, name: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateFault>;
    fn value_delete(&mut self, name: &str, key: &[u8]) -> Result<(), StateFault>;
    fn list_get(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Vec<Vec<u8>>, StateFault>;
    fn list_append(&mut self, name: &str, key: &[u8], item: &[u8]) -> Result<(), StateFault>;
    fn list_clear(&mut self, name: &str, key: &[u8]) -> Result<(), StateFault>;
    fn map_get(
        &mut self,
        name: &str,
        key: &[u8],
        field: &[u8],
        mem: &mut HostMemoryCharge,
    ) -> Result<Option<Vec<u8>>, StateFault>;
    fn map_put(&mut self, name: &str, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), StateFault>;
    fn map_remove(&mut self, name: &str, key: &[u8], field: &[u8]) -> Result<(), StateFault>;
    fn map_entries(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Entries, StateFault>;
}

/// A store shared between the instance that reads and writes it and its
/// owner, which snapshots and restores it through its own typed handle (no
/// downcast). A poisoned lock is a fault, never a panic.
impl<T: StateBackend> StateBackend for Arc<Mutex<T>> {
    fn value_get(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Option<Vec<u8>>, StateFault> {
        locked(self)?.value_get(name, key, mem)
    }
    fn value_get_many(
        &mut self,
        name: &str,
        keys: &[Vec<u8>],
        mem: &mut HostMemoryCharge,
    ) -> Result<Vec<Option<Vec<u8>>>, StateFault> {
        locked(self)?.value_get_many(name, keys, mem)
    }
    fn value_set(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<(), StateFault> {
        locked(self)?.value_set(name, key, value)
    }
    fn value_set_many(&mut self, name: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateFault> {
        locked(self)?.value_set_many(name, entries)
    }
    fn value_delete(&mut self, name: &str, key: &[u8]) -> Result<(), StateFault> {
        locked(self)?.value_delete(name, key)
    }
    fn list_get(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Vec<Vec<u8>>, StateFault> {
        locked(self)?.list_get(name, key, mem)
    }
    fn list_append(&mut self, name: &str, key: &[u8], item: &[u8]) -> Result<(), StateFault> {
        locked(self)?.list_append(name, key, item)
    }
    fn list_clear(&mut self, name: &str, key: &[u8]) -> Result<(), StateFault> {
        locked(self)?.list_clear(name, key)
    }
    fn map_get(
        &mut self,
        name: &str,
        key: &[u8],
        field: &[u8],
        mem: &mut HostMemoryCharge,
    ) -> Result<Option<Vec<u8>>, StateFault> {
        locked(self)?.map_get(name, key, field, mem)
    }
    fn map_put(&mut self, name: &str, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), StateFault> {
        locked(self)?.map_put(name, key, field, value)
    }
    fn map_remove(&mut self, name: &str, key: &[u8], field: &[u8]) -> Result<(), StateFault> {
        locked(self)?.map_remove(name, key, field)
    }
    fn map_entries(&mut self, name: &str, key: &[u8], mem: &mut HostMemoryCharge) -> Result<Entries, StateFault> {
        locked(self)?.map_entries(name, key, mem)
    }
}

fn locked<T>(shared: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, StateFault> {
    shared.lock().map_err(|_| StateFault::internal("state store lock poisoned"))
}
