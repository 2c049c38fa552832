/* lpd-engine C API: generate class-conditional images with an LPD engine bundle.
 *
 *   lpd_engine* engine = NULL;
 *   lpd_engine_params params = lpd_engine_default_params();
 *   if (lpd_engine_init("bundle/", &params, &engine) < 0) { puts(lpd_last_error()); return 1; }
 *   lpd_request_params req;
 *   lpd_engine_request_defaults(engine, 20, &req);  // cfg: the bundle's default for 20 steps
 *   req.labels = labels; req.num_labels = 2;  req.seed = 0;
 *   int64_t id;
 *   lpd_engine_submit_steps(engine, &req, 20, &id); // >= 0: accepted (LPD_STATUS_QUEUED: waits for KV blocks)
 *   lpd_engine_wait(engine, id);                 // steps the engine until this request is done
 *   lpd_engine_get_pixels(engine, id, rgb, size);
 *   lpd_engine_release(engine, id);
 *   lpd_engine_free(engine);
 *
 * Valid C99. Every function returns an lpd_status: 0 ok, positive = recoverable / informative
 * (a request waiting for KV blocks, still running), negative = error, with a message in
 * lpd_last_error() (thread-local). Nothing is retained from caller memory after a call returns:
 * arrays passed in are copied. The engine is internally serialised (one call at a time runs);
 * lpd_engine_step from several threads is safe but gains nothing.
 */
#ifndef LPD_ENGINE_H
#define LPD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t lpd_status;

#define LPD_STATUS_OK 0
#define LPD_STATUS_QUEUED 1           /* the request waits in the FIFO queue for free KV blocks */
#define LPD_STATUS_RUNNING 2          /* the request is being generated */
#define LPD_STATUS_INVALID_ARGUMENT (-1)
#define LPD_STATUS_INVALID_LABEL (-2)
#define LPD_STATUS_INVALID_SAMPLING (-3)
#define LPD_STATUS_INVALID_SCHEDULE (-4)
#define LPD_STATUS_BUNDLE_ERROR (-5)
#define LPD_STATUS_REQUEST_TOO_LARGE (-6) /* needs more KV blocks than the whole pool: never fits */
#define LPD_STATUS_UNKNOWN_REQUEST (-7)
#define LPD_STATUS_BUFFER_TOO_SMALL (-8)
#define LPD_STATUS_INTERNAL (-100)

#define LPD_CFG_LINEAR 0
#define LPD_CFG_CONSTANT 1

#define LPD_DEVICE_CPU 0  /* float32 on the CPU */
#define LPD_DEVICE_CUDA 1 /* bf16 on the GPU, tokens and pixels included; needs a build with the CUDA path */

#define LPD_PRECISION_DEFAULT 0 /* the device's own: float32 on the CPU, bf16 on the GPU */
#define LPD_PRECISION_FP32 1    /* float32 (on the GPU: the CPU path's tokens; the VQ decoder stays bf16) */
#define LPD_PRECISION_BF16 2    /* bf16; LPD_DEVICE_CUDA only */

/* Opaque engine handle: owns the weights, the KV pool and every request's state. */
typedef struct lpd_engine lpd_engine;

typedef struct lpd_engine_params {
  int64_t kv_pool_bytes;  /* KV pool size in bytes (K and V, all layers, in the precision), or 0 */
  int64_t kv_pool_blocks; /* ... or in blocks; both 0: room for 8 guided images (cuda: 64 at 256 px) */
  int32_t block_size;     /* slots per KV block (16) */
  int32_t num_threads;    /* CPU threads, 0 = all */
  int32_t verify_hashes;  /* non-zero: check the sha256 of every bundle file (1) */
  int32_t device;         /* LPD_DEVICE_CPU (default) or LPD_DEVICE_CUDA */
  int32_t precision;      /* LPD_PRECISION_DEFAULT (default), LPD_PRECISION_FP32 or LPD_PRECISION_BF16 */
} lpd_engine_params;

typedef struct lpd_engine_info {
  int64_t dim, depth, heads, vocab_size, num_classes, num_tokens, image_size;
  int64_t num_blocks, block_size, free_blocks;
  int64_t block_bytes; /* bytes of one KV block (K and V, all layers, in the precision) */
} lpd_engine_info;

typedef struct lpd_request_params {
  const int64_t* labels;       /* [num_labels] class ids, one image each (copied) */
  size_t num_labels;
  const int64_t* group_sizes;  /* [num_steps] positive, summing to num_tokens (copied) */
  size_t num_steps;
  const int64_t* orders;       /* [num_labels * num_tokens], or [num_tokens] shared by all images (copied) */
  size_t num_order_entries;
  double cfg;                  /* guidance scale, >= 0; 1 = no guidance (1) */
  int32_t cfg_schedule;        /* LPD_CFG_LINEAR (default) or LPD_CFG_CONSTANT */
  double temperature;          /* >= 0; 0 = greedy (1) */
  int64_t top_k;               /* 0 = off (0) */
  double top_p;                /* (0, 1], 1 = off (1) */
  uint64_t seed;               /* image i uses the RNG stream (seed, i) (0) */
  int32_t decode_pixels;       /* non-zero: VQ-decode to RGB when done (1) */
  uint32_t first_image;        /* RNG image index of labels[0]: image i samples from (seed, first_image + i),
                                  so a batch split into requests gives the images of the whole batch (0) */
} lpd_request_params;

/* Defaults documented in the struct comments. */
lpd_engine_params lpd_engine_default_params(void);
lpd_request_params lpd_request_default_params(void);

/* Opens a bundle directory. On success *out owns a new engine (free it with lpd_engine_free);
 * on error *out is NULL. params may be NULL (defaults). */
lpd_status lpd_engine_init(const char* bundle_dir, const lpd_engine_params* params, lpd_engine** out);

/* Frees the engine and every request it holds. NULL is a no-op. */
void lpd_engine_free(lpd_engine* engine);

lpd_status lpd_engine_get_info(const lpd_engine* engine, lpd_engine_info* out);

/* Validates and queues a request; *out_id receives its id. Returns LPD_STATUS_OK when the KV
 * pool has room for it now, LPD_STATUS_QUEUED when it must wait for blocks (it will start as
 * they free up, in FIFO order), or an error: LPD_STATUS_INVALID_LABEL / _SAMPLING / _SCHEDULE,
 * LPD_STATUS_REQUEST_TOO_LARGE when the whole pool could never hold it. */
lpd_status lpd_engine_submit(lpd_engine* engine, const lpd_request_params* request, int64_t* out_id);

/* Default request parameters for a request of `steps` steps on this engine's bundle:
 * lpd_request_default_params() with cfg = the manifest's default_cfg for `steps`, 1.0 where the
 * bundle publishes none (what lpd_engine.Generator uses when cfg is left out). steps must be
 * >= 1 (LPD_STATUS_INVALID_SCHEDULE); it need not have a precomputed schedule. */
lpd_status lpd_engine_request_defaults(const lpd_engine* engine, int64_t steps, lpd_request_params* out);

/* Submits a request by step count, choosing what lpd_engine.Generator.run(labels, steps=steps,
 * seed=seed) chooses: group sizes = the bundle's schedule for `steps`, image i's order = that
 * schedule's precomputed order pick(seed, i) (docs/rng.md, stream 4). request->group_sizes,
 * num_steps, orders and num_order_entries must be NULL / 0. Returns as lpd_engine_submit, or
 * LPD_STATUS_INVALID_SCHEDULE when the bundle has no schedule for `steps` (the message lists
 * those it has), LPD_STATUS_BUNDLE_ERROR when that schedule file is damaged (read on first use). */
lpd_status lpd_engine_submit_steps(lpd_engine* engine, const lpd_request_params* request, int64_t steps,
                                   int64_t* out_id);

/* Default orders for explicit group sizes, written to out [batch, num_tokens] for
 * lpd_engine_submit: the bundle's precomputed orders pick(seed, i) when its schedule for
 * num_steps steps has exactly these group sizes, else locality orders 0 .. batch-1 of `seed`
 * with the grid's default repulsion and proximity 1 (as lpd_engine.Generator makes them). */
lpd_status lpd_engine_default_orders(const lpd_engine* engine, const int64_t* group_sizes, size_t num_steps,
                                     uint64_t seed, size_t batch, int64_t* out);

/* Admits queued requests that fit, then advances every running request by one step of its own
 * schedule. *out_active (may be NULL) receives the number of requests still queued or running. */
lpd_status lpd_engine_step(lpd_engine* engine, int64_t* out_active);

/* LPD_STATUS_OK when request `id` is done, LPD_STATUS_QUEUED / LPD_STATUS_RUNNING otherwise,
 * LPD_STATUS_UNKNOWN_REQUEST for an unknown or released id. */
lpd_status lpd_engine_poll(const lpd_engine* engine, int64_t id);

/* Steps the engine (advancing every request) until request `id` is done. */
lpd_status lpd_engine_wait(lpd_engine* engine, int64_t id);

/* Shape of a finished request's result: images, tokens per image, pixel height and width
 * (0 when it was submitted with decode_pixels = 0). Any pointer may be NULL. */
lpd_status lpd_engine_get_result_shape(const lpd_engine* engine, int64_t id, int64_t* num_images,
                                       int64_t* num_tokens, int64_t* height, int64_t* width);

/* Copies a finished request's tokens, int64 [num_images, num_tokens] in raster order, into the
 * caller's buffer of `capacity` entries (LPD_STATUS_BUFFER_TOO_SMALL if it is too small). */
lpd_status lpd_engine_get_tokens(const lpd_engine* engine, int64_t id, int64_t* out, size_t capacity);

/* Copies a finished request's RGB pixels, uint8 [num_images, height, width, 3], into the
 * caller's buffer of `capacity` bytes. */
lpd_status lpd_engine_get_pixels(const lpd_engine* engine, int64_t id, uint8_t* out, size_t capacity);

/* Forgets a finished or still-queued request (a running one cannot be released). */
lpd_status lpd_engine_release(lpd_engine* engine, int64_t id);

/* Locality-aware orders (lpd/schedule.h) for a grid x grid token grid: order j = first_index ..
 * first_index + count - 1 of `seed`, written to out [count, grid * grid]. group_sizes
 * [num_steps] must sum to grid * grid with group_sizes[0] == 1; repulsion 2.0 and proximity 1.0
 * are the published settings at 256 px. Image i of a request is usually given order i. */
lpd_status lpd_locality_orders(int64_t grid, const int64_t* group_sizes, size_t num_steps, uint64_t seed,
                               double repulsion, double proximity, int64_t first_index, int64_t count,
                               int64_t* out);

/* The message of the last error on this thread ("" if none). Owned by the library, valid
 * until the next lpd_* call on this thread. */
const char* lpd_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* LPD_ENGINE_H */
