/* The C API from C99 (compiled with -std=c99 -Wall -Werror -pedantic): defaults, init errors (a bad
 * device, device cuda without a GPU),
 * a guided request through submit / step / poll / get, queueing status, error codes and
 * lpd_last_error. Usage: test_c_api BUNDLE_DIR (the tiny bundle test_runtime writes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpd/engine.h"

static int failures = 0;
#define CHECK(cond) do { if (!(cond)) { printf("FAIL %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, lpd_last_error()); ++failures; } } while (0)

int main(int argc, char** argv) {
  lpd_engine* engine = NULL;
  lpd_engine_params params = lpd_engine_default_params();
  lpd_request_params req = lpd_request_default_params();
  lpd_engine_info info;
  int64_t labels[2] = {1, 2}, groups[3] = {1, 5, 10}, orders[16], tokens[32], id = 0, id2 = 0, active = 0;
  int64_t images = 0, ntok = 0, h = 0, w = 0;
  uint8_t pixels[2 * 8 * 8 * 3];
  int i;
  lpd_status status;
  if (argc != 2) return 2;

  CHECK(params.block_size == 16 && params.verify_hashes == 1);
  CHECK(req.cfg == 1.0 && req.top_p == 1.0 && req.decode_pixels == 1);
  CHECK(lpd_engine_init("/nonexistent", &params, &engine) == LPD_STATUS_BUNDLE_ERROR && engine == NULL);
  CHECK(strlen(lpd_last_error()) > 0);
  CHECK(lpd_engine_init(argv[1], NULL, NULL) == LPD_STATUS_INVALID_ARGUMENT);
  CHECK(params.device == LPD_DEVICE_CPU);
  params.device = 7;
  CHECK(lpd_engine_init(argv[1], &params, &engine) == LPD_STATUS_INVALID_ARGUMENT && engine == NULL);
  params.device = LPD_DEVICE_CUDA; /* a clear error where the build or the machine has no GPU */
  status = lpd_engine_init(argv[1], &params, &engine);
  CHECK(status == LPD_STATUS_OK || (status == LPD_STATUS_INVALID_ARGUMENT && engine == NULL &&
                                    strstr(lpd_last_error(), "cuda") != NULL));
  lpd_engine_free(engine); /* NULL is fine */
  engine = NULL;
  params.device = LPD_DEVICE_CPU;

  params.kv_pool_blocks = 4; /* exactly one guided image */
  CHECK(lpd_engine_init(argv[1], &params, &engine) == LPD_STATUS_OK && engine != NULL);
  CHECK(lpd_engine_get_info(engine, &info) == LPD_STATUS_OK);
  CHECK(info.num_tokens == 16 && info.image_size == 8 && info.num_blocks == 4 && info.free_blocks == 4);

  for (i = 0; i < 16; ++i) orders[i] = (i * 7) % 16;
  req.labels = labels;
  req.num_labels = 1;
  req.group_sizes = groups;
  req.num_steps = 3;
  req.orders = orders;
  req.num_order_entries = 16;
  req.cfg = 2.5;
  req.seed = 42;
  CHECK(lpd_engine_submit(engine, &req, &id) == LPD_STATUS_OK);
  req.labels = labels + 1;
  CHECK(lpd_engine_submit(engine, &req, &id2) == LPD_STATUS_QUEUED); /* the pool holds only one */
  CHECK(lpd_engine_step(engine, &active) == LPD_STATUS_OK && active == 2);
  CHECK(lpd_engine_poll(engine, id) == LPD_STATUS_RUNNING);
  CHECK(lpd_engine_poll(engine, id2) == LPD_STATUS_QUEUED);
  CHECK(lpd_engine_get_tokens(engine, id, tokens, 32) == LPD_STATUS_INVALID_ARGUMENT); /* not done */
  CHECK(lpd_engine_wait(engine, id2) == LPD_STATUS_OK);
  CHECK(lpd_engine_poll(engine, id) == LPD_STATUS_OK && lpd_engine_poll(engine, id2) == LPD_STATUS_OK);
  CHECK(lpd_engine_get_result_shape(engine, id, &images, &ntok, &h, &w) == LPD_STATUS_OK);
  CHECK(images == 1 && ntok == 16 && h == 8 && w == 8);
  CHECK(lpd_engine_get_tokens(engine, id, tokens, 8) == LPD_STATUS_BUFFER_TOO_SMALL);
  CHECK(lpd_engine_get_tokens(engine, id, tokens, 32) == LPD_STATUS_OK);
  for (i = 0; i < 16; ++i) CHECK(tokens[i] >= 0 && tokens[i] < 29);
  CHECK(lpd_engine_get_pixels(engine, id, pixels, sizeof(pixels)) == LPD_STATUS_OK);
  CHECK(lpd_engine_release(engine, id) == LPD_STATUS_OK);
  CHECK(lpd_engine_poll(engine, id) == LPD_STATUS_UNKNOWN_REQUEST);
  CHECK(lpd_engine_release(engine, id2) == LPD_STATUS_OK);

  /* Errors. */
  req.num_labels = 2;
  req.labels = labels;
  CHECK(lpd_engine_submit(engine, &req, &id) == LPD_STATUS_REQUEST_TOO_LARGE);
  req.num_labels = 1;
  labels[0] = 10;
  CHECK(lpd_engine_submit(engine, &req, &id) == LPD_STATUS_INVALID_LABEL);
  labels[0] = 1;
  req.top_p = 1.5;
  CHECK(lpd_engine_submit(engine, &req, &id) == LPD_STATUS_INVALID_SAMPLING);
  req.top_p = 1.0;
  req.cfg_schedule = 7;
  CHECK(lpd_engine_submit(engine, &req, &id) == LPD_STATUS_INVALID_SAMPLING);
  req.cfg_schedule = LPD_CFG_CONSTANT;
  groups[2] = 9;
  CHECK(lpd_engine_submit(engine, &req, &id) == LPD_STATUS_INVALID_SCHEDULE);
  CHECK(strstr(lpd_last_error(), "16") != NULL);
  groups[2] = 10;
  CHECK(lpd_engine_submit(engine, &req, &id) == LPD_STATUS_OK);
  CHECK(lpd_engine_wait(engine, id) == LPD_STATUS_OK);
  CHECK(lpd_locality_orders(4, groups, 3, 0, 2.0, 1.0, 0, 1, orders) == LPD_STATUS_OK);
  CHECK(lpd_locality_orders(4, groups, 2, 0, 2.0, 1.0, 0, 1, orders) == LPD_STATUS_INVALID_SCHEDULE);
  lpd_engine_free(engine);
  lpd_engine_free(NULL);
  printf("test_c_api: %s\n", failures ? "FAILED" : "ok");
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
