//! Drawing helpers (placeholder).
