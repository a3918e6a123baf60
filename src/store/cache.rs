//! (in progress) The watch cache and the Store facade.
pub struct CacheOptions;
pub struct Store;
pub struct Watcher;
