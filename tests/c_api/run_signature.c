/* Run one SignatureDef of a SavedModel through TensorFlow's C API: the C++ LoadSavedModel that
 * TF Serving's SavedModelBundle uses, in a process without Python's TensorFlow.
 *
 * usage: run_signature DIR INPUT_OP INPUT_INDEX OUTPUT_OP OUTPUT_INDEX IN.f32 OUT.f32 RANK DIM...
 * Reads float32 input of the given shape, writes the float32 output and prints its shape;
 * on a TF error prints "TF_ERROR <code> <message>" and exits 3 (the process itself survives). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/c/c_api.h"

static void noop_deallocator(void *data, size_t len, void *arg) { (void)data; (void)len; (void)arg; }

static int fail(TF_Status *status) {
  printf("TF_ERROR %d %s\n", (int)TF_GetCode(status), TF_Message(status));
  return 3;
}

int main(int argc, char **argv) {
  if (argc < 10) {
    fprintf(stderr, "usage: %s DIR IN_OP IN_INDEX OUT_OP OUT_INDEX IN.f32 OUT.f32 RANK DIM...\n", argv[0]);
    return 2;
  }
  int rank = atoi(argv[8]);
  int64_t dims[8];
  size_t count = 1;
  for (int i = 0; i < rank; i++) {
    dims[i] = atoll(argv[9 + i]);
    count *= (size_t)dims[i];
  }
  float *values = malloc(count * sizeof(float) + 1);
  FILE *in = fopen(argv[6], "rb");
  if (!in || fread(values, sizeof(float), count, in) != count) {
    fprintf(stderr, "cannot read %s\n", argv[6]);
    return 2;
  }
  fclose(in);

  TF_Status *status = TF_NewStatus();
  TF_Graph *graph = TF_NewGraph();
  TF_SessionOptions *options = TF_NewSessionOptions();
  const char *tags[] = {"serve"};
  TF_Session *session = TF_LoadSessionFromSavedModel(options, NULL, argv[1], tags, 1, graph, NULL, status);
  if (TF_GetCode(status) != TF_OK) return fail(status);

  TF_Operation *input_op = TF_GraphOperationByName(graph, argv[2]);
  TF_Operation *output_op = TF_GraphOperationByName(graph, argv[4]);
  if (!input_op || !output_op) {
    fprintf(stderr, "operation %s or %s not in the graph\n", argv[2], argv[4]);
    return 2;
  }
  TF_Output input = {input_op, atoi(argv[3])};
  TF_Output output = {output_op, atoi(argv[5])};
  TF_Tensor *tensor = TF_NewTensor(TF_FLOAT, dims, rank, values, count * sizeof(float), noop_deallocator, NULL);
  TF_Tensor *result = NULL;
  TF_SessionRun(session, NULL, &input, &tensor, 1, &output, &result, 1, NULL, 0, NULL, status);
  if (TF_GetCode(status) != TF_OK) return fail(status);

  FILE *out = fopen(argv[7], "wb");
  fwrite(TF_TensorData(result), 1, TF_TensorByteSize(result), out);
  fclose(out);
  printf("OK");
  for (int i = 0; i < TF_NumDims(result); i++) printf(" %lld", (long long)TF_Dim(result, i));
  printf("\n");
  TF_DeleteTensor(result);
  TF_DeleteTensor(tensor);
  TF_CloseSession(session, status);
  TF_DeleteSession(session, status);
  TF_DeleteSessionOptions(options);
  TF_DeleteGraph(graph);
  TF_DeleteStatus(status);
  free(values);
  return 0;
}
