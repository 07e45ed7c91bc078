//! `tflite-c` backend: `tflitec` over a prebuilt `libtensorflowlite_c.so` (see
//! [`backend`](super)).
//!
//! `tflitec::Interpreter<'a>` borrows `&'a Model` and `Model<'a>` (from bytes) borrows the
//! buffer, so the three are kept behind raw heap pointers with a fixed drop order
//! (interpreter, then model, then buffer). The heap allocations never move and nothing else
//! can reach them.

use std::mem::ManuallyDrop;

use tflitec::interpreter::{Interpreter, Options};
use tflitec::model::Model;
use tflitec::tensor::{DataType, Shape};

use super::{fail, Failure, TensorSpec};

pub use tflitec::Error;

/// Shown by `vigil model check` and in the "model loaded" log line.
pub const NAME: &str = "tflitec (TensorFlow Lite C API, dynamic libtensorflowlite_c.so)";

/// Version string reported by the linked TF Lite C library (e.g. "2.6.0").
pub fn version() -> &'static str {
    tflitec::tf_lite_version()
}

pub struct Engine {
    interpreter: ManuallyDrop<Interpreter<'static>>,
    model: *mut Model<'static>,
    buffer: *mut [u64],
}

// SAFETY: `Engine` exclusively owns its heap allocations. `Model` is `Send + Sync` and
// `Interpreter` is `Send` per tflitec; moving their owner to another thread moves them too.
// No `Sync`: the interpreter mutates native state through `&self`.
unsafe impl Send for Engine {}

impl Engine {
    pub fn new(bytes: &[u8]) -> Result<Self, Failure> {
        // Copy into an 8-byte aligned buffer: TF Lite reads constant tensors in place.
        let mut words = vec![0u64; bytes.len().div_ceil(8)].into_boxed_slice();
        // SAFETY: the u64 buffer has at least `bytes.len()` initialised bytes; u8 has no
        // alignment or validity requirements.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len());
        }
        let buffer: *mut [u64] = Box::into_raw(words);
        // SAFETY: `buffer` stays allocated until `Drop`, after the model and interpreter.
        let model_bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(buffer.cast::<u8>(), bytes.len()) };
        let model = match Model::from_bytes(model_bytes) {
            Ok(m) => Box::into_raw(Box::new(m)),
            Err(e) => {
                // SAFETY: produced by Box::into_raw above, not shared.
                drop(unsafe { Box::from_raw(buffer) });
                return Err(fail("load the model")(e));
            }
        };
        // Not a struct literal: `Options` gains an `is_xnnpack_enabled` field with tflitec's
        // xnnpack feature, and the default (off) is what we want.
        #[allow(clippy::field_reassign_with_default)]
        let options = {
            let mut o = Options::default();
            o.thread_count = 1;
            o
        };
        // SAFETY: `model` stays allocated until `Drop`, after the interpreter.
        let model_ref: &'static Model<'static> = unsafe { &*model };
        match Interpreter::new(model_ref, Some(options)) {
            Ok(interpreter) => Ok(Engine { interpreter: ManuallyDrop::new(interpreter), model, buffer }),
            Err(e) => {
                // SAFETY: produced by Box::into_raw above, not shared; model before buffer.
                unsafe {
                    drop(Box::from_raw(model));
                    drop(Box::from_raw(buffer));
                }
                Err(fail("create the interpreter")(e))
            }
        }
    }

    /// (input tensors, output tensors).
    pub fn tensor_counts(&self) -> (usize, usize) {
        (self.interpreter.input_tensor_count(), self.interpreter.output_tensor_count())
    }

    /// Resizes the input's batch dimension to `n` and re-allocates the tensors.
    pub fn set_batch(&mut self, n: usize, width: usize) -> Result<(), Failure> {
        self.interpreter.resize_input(0, Shape::new(vec![n, width])).map_err(fail("resize the input tensor"))?;
        self.interpreter.allocate_tensors().map_err(fail("allocate tensors"))
    }

    pub fn input(&self) -> Result<TensorSpec, Failure> {
        let t = self.interpreter.input(0).map_err(fail("read the input tensor"))?;
        Ok(spec(t.data_type(), t.shape().dimensions().clone()))
    }

    pub fn output(&self) -> Result<TensorSpec, Failure> {
        let t = self.interpreter.output(0).map_err(fail("read the output tensor"))?;
        Ok(spec(t.data_type(), t.shape().dimensions().clone()))
    }

    /// One `invoke` over the whole batch (the caller has called `set_batch(n)` and checked
    /// `inputs.len()`); appends the raw output values to `out`.
    pub fn run(&mut self, inputs: &[f32], _n: usize, _width: usize, out: &mut Vec<f32>) -> Result<(), Failure> {
        self.interpreter.copy(inputs, 0).map_err(fail("copy the input batch"))?;
        self.interpreter.invoke().map_err(fail("invoke"))?;
        let output = self.interpreter.output(0).map_err(fail("read the output tensor"))?;
        // Checked at load time, but the type decides how `data` is read: keep it local. A
        // non-float32 output appends nothing, which the runtime reports as a shape error.
        if output.data_type() == DataType::Float32 {
            out.extend_from_slice(output.data::<f32>());
        }
        Ok(())
    }
}

fn spec(t: DataType, dims: Vec<usize>) -> TensorSpec {
    TensorSpec { float32: t == DataType::Float32, type_name: format!("{t:?}"), dims }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: each pointer came from Box::into_raw in `new` and is released exactly once,
        // in dependency order.
        unsafe {
            ManuallyDrop::drop(&mut self.interpreter);
            drop(Box::from_raw(self.model));
            drop(Box::from_raw(self.buffer));
        }
    }
}
