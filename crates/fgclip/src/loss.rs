//! Training objectives of both papers (spec §5). Filled in by the loss work.
