//! The TensorFlow Lite engine under [`ModelRuntime`](super::ModelRuntime), one per build,
//! chosen by an agent cargo feature.
//!
//! # Invariants every backend keeps
//! * One interpreter, 1 thread, no delegates: no threads of its own, deterministic results for
//!   a given input.
//! * `Send`, not `Sync`; every call that touches the interpreter takes `&mut self` (see the
//!   threading contract in [`runtime`](super::runtime)).
//! * The model must have one float32 input `[batch, width]` and one float32 output; int8 models
//!   quantize/dequantize inside the graph. The [`ModelRuntime`](super::ModelRuntime) checks
//!   this through [`Engine::input`]/[`Engine::output`] and compares the golden vectors before
//!   any output is trusted, whatever the backend.
//!
//! # Backends
//! * `tflite-c` (default): [`tflitec`] over a prebuilt `libtensorflowlite_c.so`, linked
//!   dynamically (TF Lite 2.6.0 on x86_64, extracted by `cross/tflite/provide-runtime.sh`; on
//!   another target a library the user built, through `TFLITEC_PREBUILT_PATH_<TARGET>`). The
//!   batch dimension is resized, so `n` windows cost one `invoke`.
//! * `tflite-vendored`: the `tflite` crate, TensorFlow Lite 1.15 C++ compiled from the sources
//!   it vendors with the target's g++ and linked statically: the ARM route, since no
//!   `libtensorflowlite_c.so` for ARM exists in any registry here. Its Rust API cannot resize
//!   an input, so a batch runs as `n` invokes at the model's stored batch size of 1.
//!   Selected when the feature is on (ARM builds pass `--no-default-features --features
//!   tflite-vendored`; `cross/build.sh` does).

#[cfg(not(any(feature = "tflite-c", feature = "tflite-vendored")))]
compile_error!("vigil-agent needs an inference backend: enable feature `tflite-c` or `tflite-vendored`");

#[cfg(all(feature = "tflite-c", not(feature = "tflite-vendored")))]
#[path = "backend/tflitec.rs"]
mod imp;
#[cfg(feature = "tflite-vendored")]
#[path = "backend/vendored.rs"]
mod imp;

pub use imp::{version, Engine, Error, NAME};

/// A failed engine call: the step (for the error message) and the library's error.
#[derive(Debug)]
pub struct Failure {
    pub op: &'static str,
    pub source: Error,
}

/// What a tensor holds, as far as the runtime's checks need it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub float32: bool,
    /// The element type as the library names it (for error messages).
    pub type_name: String,
    pub dims: Vec<usize>,
}

fn fail(op: &'static str) -> impl FnOnce(Error) -> Failure {
    move |source| Failure { op, source }
}
