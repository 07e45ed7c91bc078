//! `tflite-vendored` backend: the `tflite` crate, TensorFlow Lite 1.15 C++ built from vendored
//! sources and linked statically (see [`backend`](super)).
//!
//! * The crate's Rust API has no input resize, so the model runs at the batch size stored in
//!   the file (1 for our `[None, width]` exports: TF Lite 1.15 ignores `shape_signature`) and a
//!   batch of `n` windows is `n` invokes. [`Engine::input`] reports the stored shape, so the
//!   runtime's load-time check (`[1, width]`) holds for every model this backend can run.
//! * `Interpreter<'static, _>` owns its `FlatBufferModel` (which owns the model bytes) and the
//!   op resolver: no borrowed lifetimes, no unsafe code here.

use tflite::context::ElementKind;
use tflite::ops::builtin::BuiltinOpResolver;
use tflite::{FlatBufferModel, Interpreter, InterpreterBuilder, TensorIndex};

use super::{fail, Failure, TensorSpec};

pub use tflite::Error;

/// Shown by `vigil model check` and in the "model loaded" log line.
pub const NAME: &str = "tflite (TensorFlow Lite C++ built from vendored sources, static)";

/// The TensorFlow Lite release the `tflite` 0.9.8 crate vendors.
pub fn version() -> &'static str {
    "1.15"
}

pub struct Engine {
    interpreter: Interpreter<'static, BuiltinOpResolver>,
}

impl Engine {
    pub fn new(bytes: &[u8]) -> Result<Self, Failure> {
        // build_from_buffer keeps the Vec (a heap allocation that never moves) for the
        // model's lifetime; TF Lite reads constant tensors in place, which glibc's 16-byte
        // aligned allocations allow.
        let model = FlatBufferModel::build_from_buffer(bytes.to_vec()).map_err(fail("load the model"))?;
        let builder = InterpreterBuilder::new(model, BuiltinOpResolver::default())
            .map_err(fail("create the interpreter"))?;
        // 1 thread, no delegates (the builder allocates the tensors).
        let interpreter = builder.build_with_threads(1).map_err(fail("create the interpreter"))?;
        Ok(Engine { interpreter })
    }

    /// (input tensors, output tensors).
    pub fn tensor_counts(&self) -> (usize, usize) {
        (self.interpreter.inputs().len(), self.interpreter.outputs().len())
    }

    /// Nothing to do: batches run window by window at the stored batch size (1).
    pub fn set_batch(&mut self, _n: usize, _width: usize) -> Result<(), Failure> {
        Ok(())
    }

    pub fn input(&self) -> Result<TensorSpec, Failure> {
        self.spec(first(self.interpreter.inputs(), "read the input tensor")?, "read the input tensor")
    }

    pub fn output(&self) -> Result<TensorSpec, Failure> {
        self.spec(first(self.interpreter.outputs(), "read the output tensor")?, "read the output tensor")
    }

    fn spec(&self, index: TensorIndex, op: &'static str) -> Result<TensorSpec, Failure> {
        let info = self
            .interpreter
            .tensor_info(index)
            .ok_or_else(|| fail(op)(Error::internal_error(format!("no tensor {index}"))))?;
        Ok(TensorSpec {
            float32: info.element_kind == ElementKind::kTfLiteFloat32,
            type_name: format!("{:?}", info.element_kind),
            dims: info.dims,
        })
    }

    /// `n` invokes of one window each (`inputs` is `[n, width]`, checked by the caller);
    /// appends the outputs to `out`.
    pub fn run(&mut self, inputs: &[f32], n: usize, width: usize, out: &mut Vec<f32>) -> Result<(), Failure> {
        let input = first(self.interpreter.inputs(), "copy the input batch")?;
        let output = first(self.interpreter.outputs(), "read the output tensor")?;
        for window in inputs.chunks_exact(width).take(n) {
            let dst = self.interpreter.tensor_data_mut::<f32>(input).map_err(fail("copy the input batch"))?;
            if dst.len() != window.len() {
                return Err(fail("copy the input batch")(Error::internal_error(format!(
                    "input tensor holds {} values, a window has {}",
                    dst.len(),
                    window.len()
                ))));
            }
            dst.copy_from_slice(window);
            self.interpreter.invoke().map_err(fail("invoke"))?;
            out.extend_from_slice(self.interpreter.tensor_data::<f32>(output).map_err(fail("read the output tensor"))?);
        }
        Ok(())
    }
}

/// The first tensor index of a model's inputs or outputs (the runtime requires exactly one).
fn first(indices: &[TensorIndex], op: &'static str) -> Result<TensorIndex, Failure> {
    indices.first().copied().ok_or_else(|| fail(op)(Error::internal_error("the model has no such tensor")))
}
