/* Vigil project header, NOT a copy of TensorFlow source.
 *
 * Written from the documented public TensorFlow Lite C API (Apache-2.0 API,
 * https://www.tensorflow.org/lite/api_docs/c) so that tflitec 0.7.0 can run
 * bindgen offline against the prebuilt TensorFlow Lite 2.6.0
 * libtensorflowlite_c.so. Enum values match the documented TfLiteType and
 * TfLiteStatus values. Declarations that the 2.6.0 library does not export
 * are marked; calling them is a link error.
 */
#ifndef VIGIL_TFLITE_CORE_C_C_API_TYPES_H_
#define VIGIL_TFLITE_CORE_C_C_API_TYPES_H_

#include <stdint.h>

#include "tensorflow/compiler/mlir/lite/core/c/tflite_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Result of most C API calls. */
typedef enum TfLiteStatus {
  kTfLiteOk = 0,
  kTfLiteError = 1,
  kTfLiteDelegateError = 2,
  kTfLiteApplicationError = 3,
  kTfLiteDelegateDataNotFound = 4,
  kTfLiteDelegateDataWriteError = 5,
  /* 6..9 were added after TF Lite 2.6. */
  kTfLiteDelegateDataReadError = 6,
  kTfLiteUnresolvedOps = 7,
  kTfLiteCancelled = 8,
  kTfLiteOutputShapeNotKnown = 9,
} TfLiteStatus;

/* Legacy per-tensor affine quantization: real = scale * (q - zero_point). */
typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

/* Opaque handles; only ever used through pointers. */
typedef struct TfLiteModel TfLiteModel;
typedef struct TfLiteInterpreterOptions TfLiteInterpreterOptions;
typedef struct TfLiteInterpreter TfLiteInterpreter;
typedef struct TfLiteTensor TfLiteTensor;
typedef struct TfLiteDelegate TfLiteDelegate;
typedef struct TfLiteOpaqueDelegateStruct TfLiteOpaqueDelegate;
/* Not available in TF Lite 2.6.0. */
typedef struct TfLiteSignatureRunner TfLiteSignatureRunner;

#ifdef __cplusplus
}
#endif

#endif
