//! Collection search with FG-CLIP and FG-CLIP 2: index folders of photos once, then ask in English or Chinese
//! (or with a photo) and get images *and boxes* back.
//!
//! Data flows one way: [`scan`] finds files → [`indexer`] decodes and encodes them (the model from `fgclip`,
//! [`regions`] for the box candidates, [`vectors`] for the f16 encoding) → a [`store::Store`] keeps the truth →
//! [`query`] reads it. The store is SQLite by default ([`store::sqlite`]).

pub mod ann;
pub mod error;
pub mod identity;
pub mod indexer;
pub mod quality;
pub mod query;
pub mod regions;
pub mod rng;
pub mod scan;
pub mod store;
pub mod vectors;

pub use error::{Error, Result};
pub use indexer::{index, IndexOptions, NoProgress, Progress, Summary};
pub use query::{search, Hit, Kinds, Query, SearchOptions};
pub use regions::RegionConfig;
pub use store::sqlite::SqliteStore;
pub use store::{IndexInfo, Kind, Store};
