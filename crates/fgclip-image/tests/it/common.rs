//! Shared test helpers: locating the fixtures and reading safetensors views by name.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// The fixtures folder with its `images`, or `None` after a SKIP line (a failure with
/// `FGCLIP_REQUIRE_FIXTURES=1`).
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = fgclip_testkit::fixtures_dir()?;
    if dir.join("images").is_dir() {
        Some(dir)
    } else {
        fgclip_testkit::missing(&dir.join("images"))
    }
}

/// This crate's own small test data (`tests/data`).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub struct Tensors {
    bytes: Vec<u8>,
}

impl Tensors {
    pub fn open(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        Tensors { bytes }
    }

    fn view(&self, name: &str, dtype: Dtype) -> (Vec<usize>, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("tensor {name}: {e}"));
        assert_eq!(t.dtype(), dtype, "tensor {name} dtype");
        (t.shape().to_vec(), t.data().to_vec())
    }

    pub fn names(&self) -> Vec<String> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        st.names().into_iter().map(|s| s.to_string()).collect()
    }

    pub fn u8(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        self.view(name, Dtype::U8)
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (s, b) = self.view(name, Dtype::F32);
        (s, b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    }

    pub fn i32(&self, name: &str) -> (Vec<usize>, Vec<i32>) {
        let (s, b) = self.view(name, Dtype::I32);
        (s, b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect())
    }

    pub fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let (s, b) = self.view(name, Dtype::I64);
        (s, b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
    }
}

/// Max |a - b| (panics on length mismatch).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// (max |a - b|, number of differing values) for uint8 buffers.
pub fn u8_diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).fold((0, 0), |(m, n), (x, y)| (m.max(x.abs_diff(*y)), n + (x != y) as usize))
}

pub const FIXTURE_IMAGES: [&str; 3] = ["cat_dfclor.jpg", "part.jpg", "df_cups.png"];
