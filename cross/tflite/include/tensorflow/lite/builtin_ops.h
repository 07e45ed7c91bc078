/* Vigil project header, NOT a copy of TensorFlow source.
 *
 * Written from the documented public TensorFlow Lite C API (Apache-2.0 API,
 * https://www.tensorflow.org/lite/api_docs/c) so that tflitec 0.7.0 can run
 * bindgen offline against the prebuilt TensorFlow Lite 2.6.0
 * libtensorflowlite_c.so. Enum values match the documented TfLiteType and
 * TfLiteStatus values. Declarations that the 2.6.0 library does not export
 * are marked; calling them is a link error.
 */
#ifndef VIGIL_TFLITE_BUILTIN_OPS_H_
#define VIGIL_TFLITE_BUILTIN_OPS_H_

/* The TfLiteBuiltinOperator enumeration is deliberately not declared here:
 * Vigil never registers or resolves operators through the C API (the
 * library's built-in op resolver is used), so no declaration is needed.
 * This file exists because tflitec's build script copies it. */

#endif
