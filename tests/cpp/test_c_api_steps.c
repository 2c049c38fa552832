/* Requests by step count through the C API, from strict C99, on the tiny bundle (which
 * write_tiny_bundle gives a steps-4 schedule of 8 orders and default_cfg {"4": 2.5}):
 * lpd_engine_request_defaults takes the manifest's guidance, lpd_engine_submit_steps gives the
 * tokens of an explicit request with the same group sizes and lpd_engine_default_orders, a step
 * count the bundle lacks is refused with the available ones listed. */
#include <stdio.h>
#include <string.h>

#include "lpd/engine.h"

static int failures = 0;
#define CHECK(cond)                                               \
  do {                                                            \
    if (!(cond)) {                                                \
      printf("FAIL %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, \
             lpd_last_error());                                   \
      ++failures;                                                 \
    }                                                             \
  } while (0)

int main(int argc, char** argv) {
  lpd_engine* engine = NULL;
  lpd_request_params r, x;
  int64_t labels[3] = {3, 7, 1};
  int64_t g[4] = {1, 5, 5, 5}, other[4] = {1, 3, 6, 6}, bad[2] = {1, 2};
  int64_t orders[3 * 16], made[2 * 16], expect[2 * 16];
  int64_t tokens_steps[3 * 16], tokens_explicit[3 * 16];
  int64_t by_steps = 0, explicit_id = 0, id = 0;
  if (argc != 2) return 2;
  if (lpd_engine_init(argv[1], NULL, &engine) != LPD_STATUS_OK) {
    printf("init: %s\n", lpd_last_error());
    return 1;
  }

  CHECK(lpd_engine_request_defaults(engine, 4, &r) == LPD_STATUS_OK && r.cfg == 2.5 && r.temperature == 1.0 &&
        r.top_p == 1.0 && r.decode_pixels == 1 && r.labels == NULL && r.num_steps == 0);
  CHECK(lpd_engine_request_defaults(engine, 5, &r) == LPD_STATUS_OK && r.cfg == 1.0);
  CHECK(lpd_engine_request_defaults(engine, 0, &r) == LPD_STATUS_INVALID_SCHEDULE);
  CHECK(lpd_engine_request_defaults(NULL, 4, &r) == LPD_STATUS_INVALID_ARGUMENT);

  /* By steps, and the same request spelled out: identical tokens. */
  CHECK(lpd_engine_request_defaults(engine, 4, &r) == LPD_STATUS_OK);
  r.labels = labels;
  r.num_labels = 3;
  r.seed = 11;
  r.decode_pixels = 0;
  CHECK(lpd_engine_submit_steps(engine, &r, 4, &by_steps) >= 0);
  CHECK(lpd_engine_default_orders(engine, g, 4, 11, 3, orders) == LPD_STATUS_OK);
  x = r;
  x.group_sizes = g;
  x.num_steps = 4;
  x.orders = orders;
  x.num_order_entries = 3 * 16;
  CHECK(lpd_engine_submit(engine, &x, &explicit_id) >= 0);
  CHECK(lpd_engine_wait(engine, by_steps) == LPD_STATUS_OK && lpd_engine_wait(engine, explicit_id) == LPD_STATUS_OK);
  CHECK(lpd_engine_get_tokens(engine, by_steps, tokens_steps, 3 * 16) == LPD_STATUS_OK);
  CHECK(lpd_engine_get_tokens(engine, explicit_id, tokens_explicit, 3 * 16) == LPD_STATUS_OK);
  CHECK(memcmp(tokens_steps, tokens_explicit, sizeof tokens_steps) == 0);
  CHECK(lpd_engine_release(engine, by_steps) == LPD_STATUS_OK && lpd_engine_release(engine, explicit_id) == LPD_STATUS_OK);

  /* Refusals. */
  CHECK(lpd_engine_submit_steps(engine, &r, 5, &id) == LPD_STATUS_INVALID_SCHEDULE &&
        strstr(lpd_last_error(), "no schedule for 5 steps; available step counts: 4") != NULL);
  CHECK(lpd_engine_submit_steps(engine, &x, 4, &id) == LPD_STATUS_INVALID_ARGUMENT);
  r.num_labels = 0;
  CHECK(lpd_engine_submit_steps(engine, &r, 4, &id) == LPD_STATUS_INVALID_LABEL);

  /* Group sizes the bundle does not hold: locality orders 0.. of the seed, repulsion 1 at grid 4. */
  CHECK(lpd_engine_default_orders(engine, other, 4, 11, 2, made) == LPD_STATUS_OK);
  CHECK(lpd_locality_orders(4, other, 4, 11, 1.0, 1.0, 0, 2, expect) == LPD_STATUS_OK);
  CHECK(memcmp(made, expect, sizeof made) == 0);
  CHECK(lpd_engine_default_orders(engine, bad, 2, 0, 1, made) == LPD_STATUS_INVALID_SCHEDULE);

  lpd_engine_free(engine);
  printf("test_c_api_steps: %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
