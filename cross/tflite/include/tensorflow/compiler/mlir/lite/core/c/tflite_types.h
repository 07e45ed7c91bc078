/* Vigil project header, NOT a copy of TensorFlow source.
 *
 * Written from the documented public TensorFlow Lite C API (Apache-2.0 API,
 * https://www.tensorflow.org/lite/api_docs/c) so that tflitec 0.7.0 can run
 * bindgen offline against the prebuilt TensorFlow Lite 2.6.0
 * libtensorflowlite_c.so. Enum values match the documented TfLiteType and
 * TfLiteStatus values. Declarations that the 2.6.0 library does not export
 * are marked; calling them is a link error.
 */
#ifndef VIGIL_TFLITE_COMPILER_MLIR_LITE_CORE_C_TFLITE_TYPES_H_
#define VIGIL_TFLITE_COMPILER_MLIR_LITE_CORE_C_TFLITE_TYPES_H_

#ifdef __cplusplus
extern "C" {
#endif

/* Element type of a tensor. Values are part of the stable TF Lite ABI. */
typedef enum {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4,
  kTfLiteString = 5,
  kTfLiteBool = 6,
  kTfLiteInt16 = 7,
  kTfLiteComplex64 = 8,
  kTfLiteInt8 = 9,
  kTfLiteFloat16 = 10,
  kTfLiteFloat64 = 11,
  kTfLiteComplex128 = 12,
  kTfLiteUInt64 = 13,
  kTfLiteResource = 14,
  kTfLiteVariant = 15,
  kTfLiteUInt32 = 16,
  /* 17..19 were added after TF Lite 2.6; a 2.6.0 library never reports them. */
  kTfLiteUInt16 = 17,
  kTfLiteInt4 = 18,
  kTfLiteBFloat16 = 19,
} TfLiteType;

#ifdef __cplusplus
}
#endif

#endif
