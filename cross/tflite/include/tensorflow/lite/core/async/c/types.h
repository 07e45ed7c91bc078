/* Vigil project header, NOT a copy of TensorFlow source.
 *
 * Written from the documented public TensorFlow Lite C API (Apache-2.0 API,
 * https://www.tensorflow.org/lite/api_docs/c) so that tflitec 0.7.0 can run
 * bindgen offline against the prebuilt TensorFlow Lite 2.6.0
 * libtensorflowlite_c.so. Enum values match the documented TfLiteType and
 * TfLiteStatus values. Declarations that the 2.6.0 library does not export
 * are marked; calling them is a link error.
 */
#ifndef VIGIL_TFLITE_CORE_ASYNC_C_TYPES_H_
#define VIGIL_TFLITE_CORE_ASYNC_C_TYPES_H_

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque types of the asynchronous API (not present in TF Lite 2.6.0, not used). */
typedef struct TfLiteAsyncKernel TfLiteAsyncKernel;
typedef struct TfLiteExecutionTask TfLiteExecutionTask;

#ifdef __cplusplus
}
#endif

#endif
