//! The wasmtime side: one engine with a pooling allocator, one cached
//! `InstancePre` per connector (keyed by the component's sha256), compiled
//! artifacts cached on disk, and a fresh, limited store per fetch.
//!
//! It knows a capability only through [`Capability`] (how to link its host
//! functions) and [`Grant`] (what a store holds for them): the list of
//! capabilities is given to [`Runtime::new`] by the layer that knows them.
#![deny(missing_docs)]

mod host;
mod wasi;

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime::{ResourceLimiter, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use silo_bindings::Kind;
use silo_bindings::{AnyConnector, AnyConnectorPre};
use silo_core::error::{Error, Result};
use silo_core::limits::{LOG_BYTES, Limits};

/// How often the engine's epoch advances: the granularity of time limits and
/// of yielding a busy guest back to the executor.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Longest a fetch waits for a free instance slot before it is told the
/// host is busy (503, retry): past capacity, fetches queue briefly instead
/// of failing as if the connector had trapped.
const INSTANCE_WAIT: Duration = Duration::from_secs(5);
/// Core instances inside one component: a Rust guest has its module plus the
/// adapter shims `wasm-component-ld` adds.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Table growth a connector may ask for (function tables of ordinary guests
/// stay far below this).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Bytes of a freed instance's linear memory reset in place (only the pages
/// it wrote, found with Linux's `PAGEMAP_SCAN`) instead of being handed back
/// to the kernel: an `madvise` per instance costs a TLB flush on every core
/// running the process, and the next instance in the slot a page fault per
/// page it touches. Past this, the rest is decommitted as before.
const KEEP_RESIDENT: usize = 4 << 20;
/// The same for tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Interfaces every connector may import besides its datasource's capability.
const COMMON_IMPORTS: &[&str] = &[
    "silo:connector/types@",
    "silo:connector/streams@",
    "silo:connector/log@",
];

/// A host capability as the runtime sees it: the contract interface it
/// grants and how its host functions are linked. Each capability crate has
/// one; the runtime never names them.
pub trait Capability: Send + Sync {
    /// The interface a connector imports to use it.
    fn kind(&self) -> Kind;
    /// Adds its host functions, which find their state in [`State`] (its
    /// [`Grant`], the resource table, the call budget).
    fn add_to_linker(&self, linker: &mut Linker<State>) -> wasmtime::Result<()>;
}

/// A capability bound to one fetch, as the runtime sees it: something the
/// store holds for the capability's host functions to find again, plus the
/// directories (if any) the guest gets preopened read-only. The runtime never
/// looks inside; each capability downcasts to its own grant.
pub trait Grant: Any + Send {
    /// (host directory, guest path) pairs preopened read-only.
    fn preopened(&self) -> &[(PathBuf, String)] {
        &[]
    }
}

/// Per-fetch store data: the guest's capabilities and nothing more.
pub struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    limiter: Limiter,
    deadline: Instant,
    log_budget: usize,
    queries: usize,
    connector: Arc<str>,
    /// The capability bound to this fetch (none: the connector may only log).
    grant: Option<Box<dyn Grant>>,
}

impl State {
    /// The resource table holding host resources handed to the guest.
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Charges `n` bytes of guest log output; false once the budget is spent.
    pub fn charge_log(&mut self, n: usize) -> bool {
        let ok = self.log_budget >= n;
        self.log_budget = self.log_budget.saturating_sub(n);
        ok
    }

    /// Counts a statement; false once `max` have run in this store.
    pub fn charge_query(&mut self, max: usize) -> bool {
        self.queries += 1;
        self.queries <= max
    }

    /// This fetch's grant, if it is a `G`.
    pub fn grant<G: Grant>(&self) -> Option<&G> {
        let grant: &dyn Any = self.grant.as_deref()?;
        grant.downcast_ref()
    }

    /// The connector's name, for log lines.
    pub fn connector(&self) -> &str {
        &self.connector
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Memory and table limits; remembers a refused growth so the resulting trap
/// is reported as a limit rather than a crash.
struct Limiter {
    max_memory: usize,
    memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_memory;
        self.memory_refused |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Where a loaded connector's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Compiled now (and written to the disk cache, if any).
    Compiled,
    /// Read from the on-disk compile cache.
    DiskCache,
    /// Already loaded by this runtime.
    Memory,
}

/// A compiled connector, ready to instantiate cheaply.
#[derive(Clone)]
pub struct Loaded {
    pre: AnyConnectorPre<State>,
    /// sha256 of the component bytes, hex.
    pub digest: String,
    /// How this load was satisfied.
    pub source: LoadSource,
}

/// The engine, linker and connector cache shared by every fetch.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    loaded: Mutex<HashMap<String, Loaded>>,
    ticker_stop: Arc<AtomicBool>,
    /// One permit per pooled instance slot.
    slots: Arc<tokio::sync::Semaphore>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// An engine sized for `limits`, caching compiled components in `cache_dir`
    /// (created owner-only) when given, linking the common interfaces and
    /// `capabilities`.
    pub fn new(
        limits: Limits,
        cache_dir: Option<PathBuf>,
        capabilities: &[&dyn Capability],
    ) -> Result<Runtime> {
        let instances = limits.instances.clamp(1, silo_core::limits::MAX_INSTANCES);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * CORE_INSTANCES_PER_COMPONENT)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_memories(instances)
            .total_tables(instances * 2)
            .total_stacks(instances)
            .max_memory_size(limits.memory_bytes)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(internal)?;

        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(internal)?;
        host::add_to_linker(&mut linker).map_err(internal)?;
        for capability in capabilities {
            capability.add_to_linker(&mut linker).map_err(internal)?;
        }

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.clone());
        std::thread::Builder::new()
            .name("silo-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(internal)?;

        if let Some(dir) = &cache_dir {
            create_private_dir(dir)?;
        }
        Ok(Runtime {
            engine,
            linker,
            limits,
            cache_dir,
            loaded: Mutex::default(),
            ticker_stop,
            slots: Arc::new(tokio::sync::Semaphore::new(instances as usize)),
        })
    }

    /// The limits every fetch runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles (or fetches from the memory or disk cache) a connector
    /// component, refusing one that imports anything its world does not allow.
    pub fn load(&self, wasm: &[u8], kind: Kind) -> Result<Loaded> {
        let digest = hex::encode(Sha256::digest(wasm));
        if let Some(hit) = self.cache().get(&digest) {
            check_imports(&self.engine, hit.pre.instance_pre().component(), kind)?;
            return Ok(Loaded {
                source: LoadSource::Memory,
                ..hit.clone()
            });
        }
        let (component, source) = self.compile(wasm, &digest)?;
        check_imports(&self.engine, &component, kind)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(AnyConnectorPre::new)
            .map_err(|e| {
                Error::Connector(format!("component does not fit a connector world: {e}"))
            })?;
        let loaded = Loaded {
            pre,
            digest: digest.clone(),
            source,
        };
        self.cache().insert(digest, loaded.clone());
        Ok(loaded)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Loaded>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/get), so a poisoned lock is still usable.
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn compile(&self, wasm: &[u8], digest: &str) -> Result<(Component, LoadSource)> {
        let Some(dir) = &self.cache_dir else {
            let component = Component::new(&self.engine, wasm).map_err(invalid_component)?;
            return Ok((component, LoadSource::Compiled));
        };
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut h);
        let path = dir.join(format!(
            "{digest}-{:016x}.cwasm",
            std::hash::Hasher::finish(&h)
        ));
        if path.exists() {
            match deserialize(&self.engine, &path) {
                Ok(c) => return Ok((c, LoadSource::DiskCache)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable compile cache entry: {e}")
                }
            }
        }
        let component = Component::new(&self.engine, wasm).map_err(invalid_component)?;
        match component.serialize() {
            Ok(bytes) => {
                // Unique per writer: several processes may fill the cache at once.
                static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = WRITES.fetch_add(1, Ordering::Relaxed);
                let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
                if let Err(e) =
                    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path))
                {
                    tracing::warn!("could not write compile cache: {e}");
                }
            }
            Err(e) => tracing::warn!("could not serialize component: {e}"),
        }
        Ok((component, LoadSource::Compiled))
    }

    /// A fresh instance with its own store, limits and capability grant.
    pub async fn instantiate(
        &self,
        loaded: &Loaded,
        name: &str,
        grant: Option<Box<dyn Grant>>,
    ) -> Result<Instance> {
        let slot =
            match tokio::time::timeout(INSTANCE_WAIT, self.slots.clone().acquire_owned()).await {
                Ok(Ok(slot)) => slot,
                Ok(Err(_)) | Err(_) => {
                    return Err(Error::Busy(format!(
                        "all {} connector instances are in use; retry shortly",
                        self.limits
                            .instances
                            .clamp(1, silo_core::limits::MAX_INSTANCES)
                    )));
                }
            };
        let state = State {
            table: ResourceTable::new(),
            wasi: wasi::ctx(grant.as_deref().map_or(&[], |g| g.preopened()))?,
            limiter: Limiter {
                max_memory: self.limits.memory_bytes,
                memory_refused: false,
            },
            deadline: Instant::now() + self.limits.timeout,
            log_budget: LOG_BYTES,
            queries: 0,
            connector: name.into(),
            grant,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        // Yield to the executor every tick so a spinning guest never starves
        // other fetches; interrupt once the call's deadline has passed.
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let bindings = loaded.pre.instantiate_async(&mut store).await;
        let mut instance = Instance {
            store,
            bindings: None,
            timeout: self.limits.timeout,
            _slot: slot,
        };
        instance.bindings = Some(instance.settle(bindings)?);
        Ok(instance)
    }
}

/// One live connector instance, used for a single fetch or describe.
pub struct Instance {
    store: Store<State>,
    bindings: Option<AnyConnector>,
    timeout: Duration,
    /// Held for the instance's life; released after the store (fields drop
    /// in order), so a permit never outlives its slot's reuse.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Instance {
    /// Runs one call into the guest under the per-call time limit, mapping
    /// traps to errors that say which limit was hit.
    pub async fn call<R, F>(&mut self, f: F) -> Result<R>
    where
        F: AsyncFnOnce(&AnyConnector, &mut Store<State>) -> wasmtime::Result<R>,
    {
        let Instance {
            store,
            bindings,
            timeout,
            ..
        } = self;
        let Some(bindings) = bindings.as_ref() else {
            return Err(Error::Internal("instance used after it failed".into()));
        };
        store.data_mut().deadline = Instant::now() + *timeout;
        let out = tokio::time::timeout(*timeout, f(bindings, store)).await;
        match out {
            Ok(r) => self.settle(r),
            Err(_) => {
                self.bindings = None;
                Err(self.time_limit())
            }
        }
    }

    fn settle<R>(&mut self, r: wasmtime::Result<R>) -> Result<R> {
        r.map_err(|e| {
            // A trapped instance must not be called again.
            self.bindings = None;
            if self.store.data().limiter.memory_refused {
                return Error::Limit(format!(
                    "connector exceeded its memory limit of {} MiB",
                    self.store.data().limiter.max_memory >> 20
                ));
            }
            if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                return self.time_limit();
            }
            if let Some(e) = e.downcast_ref::<Error>() {
                return Error::Internal(e.to_string());
            }
            tracing::warn!(
                connector = self.store.data().connector(),
                "connector trapped: {e:?}"
            );
            match e.downcast_ref::<Trap>() {
                Some(trap) => Error::Connector(format!("connector trapped: {trap}")),
                None => Error::Connector("connector trapped".into()),
            }
        })
    }

    fn time_limit(&self) -> Error {
        Error::Limit(format!(
            "connector exceeded its time limit of {} ms",
            self.timeout.as_millis()
        ))
    }

    /// The store, for taking host resources the guest handed back.
    pub fn store_mut(&mut self) -> &mut Store<State> {
        &mut self.store
    }
}

/// What `silo connector inspect` reports about a component.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// SHA-256 of the component bytes (what a manifest pins).
    pub digest: String,
    /// The kind it was checked as: given, or the one capability it imports.
    pub kind: Option<Kind>,
    /// Every import, as WIT names them.
    pub imports: Vec<String>,
    /// Every export.
    pub exports: Vec<String>,
}

impl Runtime {
    /// Compiles `wasm` and checks it as the host would load it: its imports
    /// against `kind` (or, without one, against the single capability it
    /// imports), and its exports against the connector world. Errors name
    /// the WIT item and what to change.
    pub fn inspect(&self, wasm: &[u8], kind: Option<Kind>) -> Result<Inspection> {
        let digest = hex::encode(Sha256::digest(wasm));
        let (component, _) = self.compile(wasm, &digest)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let imported: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| {
                let prefix = format!("silo:connector/{}@", k.interface());
                imports.iter().any(|i| i.starts_with(&prefix))
            })
            .collect();
        let kind = match (kind, imported.as_slice()) {
            (Some(k), _) => Some(k),
            (None, [one]) => Some(*one),
            (None, []) => None,
            (None, many) => {
                let names: Vec<&str> = many.iter().map(|k| k.interface()).collect();
                return Err(Error::Connector(format!(
                    "the component imports silo:connector/{{{}}}; a connector serves one kind of \
                     datasource: keep the one it is for",
                    names.join(", ")
                )));
            }
        };
        // Without a capability, it may still import only the common parts.
        check_imports(&self.engine, &component, kind.unwrap_or(Kind::Sql))?;
        self.linker
            .instantiate_pre(&component)
            .and_then(AnyConnectorPre::new)
            .map_err(|e| {
                Error::Connector(format!(
                    "the component does not export `silo:connector/connector` as the world in \
                     wit/connector.wit defines it ({e}); export it with silo_sdk::export_connector!"
                ))
            })?;
        Ok(Inspection {
            digest,
            kind,
            imports,
            exports,
        })
    }
}

/// Refuses a component that imports anything its datasource's world does not
/// give: another capability, sockets, http, or any interface not linked.
fn check_imports(engine: &Engine, component: &Component, kind: Kind) -> Result<()> {
    let capability = format!("silo:connector/{}@", kind.interface());
    for (name, _) in component.component_type().imports(engine) {
        let allowed = name.starts_with(&capability)
            || COMMON_IMPORTS
                .iter()
                .chain(wasi::LINKED_WASI)
                .any(|p| name.starts_with(p));
        if !allowed {
            return Err(Error::Connector(format!(
                "connector imports `{name}`, which a {k} connector is not given \
                 (it may import only silo:connector/{k}, silo:connector/log and the basic WASI a std guest needs); \
                 remove what pulls it in (a dependency using sockets, HTTP or another capability)",
                k = kind.interface()
            )));
        }
    }
    Ok(())
}

#[expect(
    unsafe_code,
    reason = "loading a precompiled artifact is unsafe by design in wasmtime"
)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // Read, not mmap: a file truncated or rewritten under a mapping would
    // fault the whole host (SIGBUS) instead of failing this one load.
    let bytes = std::fs::read(path)?;
    // SAFETY: the file was written by `Component::serialize` of an engine with
    // the same compatibility hash (it is in the name), into a directory only
    // this user can write (see `create_private_dir`); wasmtime still checks
    // its header and that hash before using it.
    unsafe { Component::deserialize(engine, &bytes) }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::Config(format!("compile cache {}: {e}", dir.display())))
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

fn invalid_component(e: wasmtime::Error) -> Error {
    Error::Connector(format!("not a valid component: {e}"))
}

/// Declares how a capability is linked: `$name`, a unit struct implementing
/// [`Capability`] for the interface `$kind`, whose host functions (the
/// generated `Host` trait of `$interface`, implemented by the capability on
/// `$view`) see an instance's [`State`] through `$view`, a struct this
/// declares. One declaration per capability crate, so each links the same way.
#[macro_export]
macro_rules! capability {
    ($name:ident, $kind:ident, $interface:ident, $view:ident) => {
        #[doc = concat!("The `", stringify!($interface), "` interface, linked for the runtime.")]
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        #[doc = concat!("The `", stringify!($interface), "` host functions' view of an instance's state.")]
        struct $view<'a>(&'a mut $crate::State);

        const _: () = {
            struct View;

            impl ::wasmtime::component::HasData for View {
                type Data<'a> = $view<'a>;
            }

            impl $crate::Capability for $name {
                fn kind(&self) -> $crate::Kind {
                    $crate::Kind::$kind
                }

                fn add_to_linker(
                    &self,
                    linker: &mut ::wasmtime::component::Linker<$crate::State>,
                ) -> ::wasmtime::Result<()> {
                    $interface::add_to_linker::<$crate::State, View>(linker, |state| $view(state))
                }
            }
        };
    };
}
