//! FineHARD training records (spec §6.1). Filled in by the data-loading work.
