//! Operator state for guests: each subtask's fjall-backed `OperatorState`,
//! shared between its instance (which reads and writes it through the `state`
//! capability, `flumen_types::StateBackend`) and the engine, which snapshots,
//! restores and clears it through this typed handle: no downcast.

use std::sync::{Arc, Mutex};

use flumen_state::{OperatorState, StateError};
use flumen_wasm::StateHandle;

use crate::CheckpointError;

/// One subtask's state.
pub(crate) type SharedState = Arc<Mutex<OperatorState>>;

/// The capability handle its instances get.
pub(crate) fn handle(state: &SharedState) -> StateHandle {
    StateHandle::new(Box::new(state.clone()))
}

/// Runs `f` on the store (snapshot, restore, clear).
pub(crate) fn with_store<T>(
    state: &SharedState,
    f: impl FnOnce(&mut OperatorState) -> Result<T, StateError>,
) -> Result<T, CheckpointError> {
    let mut store = state.lock().map_err(|_| CheckpointError::Write("a state store's lock was poisoned".into()))?;
    Ok(f(&mut store)?)
}
