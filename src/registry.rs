//! The set of cameras a server runs, owned by the [`crate::app::App`] (no
//! global state), looked up by id from the HTTP handlers.

use std::sync::{Arc, RwLock};

use crate::camera::Camera;

/// Cameras in configuration order. Lookups scan the list: a server runs tens
/// of cameras, not thousands, and order matters to the UI.
#[derive(Debug, Default)]
pub struct Cameras {
    list: RwLock<Vec<Arc<Camera>>>,
}

impl Cameras {
    pub fn get(&self, id: &str) -> Option<Arc<Camera>> {
        self.read().iter().find(|c| c.id().as_str() == id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Camera>> {
        self.read().clone()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Adds a camera; gives it back if its id is taken.
    pub fn insert(&self, camera: Arc<Camera>) -> Result<(), Arc<Camera>> {
        let mut list = self.list.write().expect("camera registry lock");
        if list.iter().any(|c| c.id() == camera.id()) {
            return Err(camera);
        }
        list.push(camera);
        Ok(())
    }

    /// Removes a camera from the set; the caller shuts it down.
    pub fn remove(&self, id: &str) -> Option<Arc<Camera>> {
        let mut list = self.list.write().expect("camera registry lock");
        let index = list.iter().position(|c| c.id().as_str() == id)?;
        Some(list.remove(index))
    }

    /// Stops every camera, concurrently, and waits until all pipelines are
    /// NULL.
    pub async fn shutdown(&self) {
        let cameras = self.all();
        futures_util::future::join_all(cameras.iter().map(|c| c.shutdown())).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Camera>>> {
        // A panic while holding this lock leaves the list itself intact.
        self.list.read().unwrap_or_else(|e| e.into_inner())
    }
}
