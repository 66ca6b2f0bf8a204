/* CPU kernels for the training step (see tangpoem/native.py, which compiles and loads this file).
 *
 * Paddle's CPU elementwise kernels run on one thread and one op at a time; these fuse the LSTM cell
 * and the softmax + cross-entropy into single passes on all threads (OpenMP from gcc's libgomp, the
 * runtime oneDNN uses, so the two share one thread pool). Matrix products go to oneDNN's sgemm from
 * the Paddle wheel: on AMD processors MKL's cblas_sgemm, which Paddle's matmul calls, takes a generic
 * path at a third of oneDNN's speed (26 against 140 GFLOP/s; benchmarks/README.md).
 *
 * Layouts are row-major float32. Gate order is Paddle's nn.LSTM one: i, f, g (cell candidate), o.
 * Functions that can fail return a status (TP_OK, TP_BAD_LABEL, TP_NO_MEMORY; native.py raises on the
 * others) and check their inputs and allocations before writing anything.
 */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* oneDNN's public sgemm (row-major), from the libdnnl inside the Paddle wheel: fast on every x86 CPU
 * (it dispatches by instruction set; MKL's cblas takes a slow generic path on AMD processors) */
typedef int64_t dim_t;
int dnnl_sgemm(char transa, char transb, dim_t M, dim_t N, dim_t K, float alpha, const float *A, dim_t lda,
               const float *B, dim_t ldb, float beta, float *C, dim_t ldc);
void omp_set_num_threads(int n);
int omp_get_thread_num(void);

enum { TP_OK = 0, TP_BAD_LABEL = 1, TP_NO_MEMORY = 2 }; /* as native.py's OK, BAD_LABEL, NO_MEMORY */

/* Signals are kept off every thread while it may run oneDNN's sgemm. Its JIT kernels (in the libdnnl of the
 * Paddle wheels, 2.6 to 3.3 at least) point the stack pointer into a heap workspace while they run (oneDNN
 * issue 4845, fixed upstream by PR 4855): a signal handler run on such a thread writes its frame into the
 * heap. That is what Ctrl-C did to training: Python's SIGINT handler corrupted malloc's chunks, and the
 * run died in free() before it could write its checkpoint. Blocked, a signal stays pending and is taken as
 * soon as the call returns. The calling thread restores its mask on return; OpenMP's worker threads keep
 * theirs blocked for good (they never run Python, whose handlers need only the main thread). Signals raised
 * by a fault in the thread itself are left alone: blocking those would only turn a crash into a hang. */
static __thread int worker_blocked;

static void async_signals(sigset_t *set) {
    sigfillset(set);
    const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(set, faults[i]);
}

static void block_signals(sigset_t *old, int threads) {
    sigset_t set;
    async_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, old);
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        if (omp_get_thread_num() != 0 && !worker_blocked) {
            pthread_sigmask(SIG_BLOCK, &set, NULL);
            worker_blocked = 1;
        }
    }
}

static void restore_signals(const sigset_t *old) { pthread_sigmask(SIG_SETMASK, old, NULL); }

/* Labels index rows of `vocab` logits: one outside [0, vocab) would read and write past the buffer. */
static int labels_in_range(const int64_t *labels, int64_t rows, int64_t vocab) {
    for (int64_t r = 0; r < rows; r++)
        if (labels[r] < 0 || labels[r] >= vocab) return 0;
    return 1;
}

/* C [m, n] = alpha * op(A) op(B) + beta * C, row-major; op(X) = X^T when its flag is set */
#ifdef TP_PLAIN_GEMM
/* A plain loop instead of oneDNN's: a sanitizer build (tests/test_sanitize.py) then checks every access
 * of the products too, which the uninstrumented libdnnl would make unseen. */
static void sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                  const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t p = 0; p < k; p++) acc += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = alpha * acc + (beta == 0.0f ? 0.0f : beta * c[i * ldc + j]);
        }
}
#else
static void sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                  const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
#endif

/* the same for Python (fastlstm's large products), on `threads` threads */
void gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, const float *b,
          int64_t ldb, float beta, float *c, int64_t ldc, int threads) {
    sigset_t mask;
    block_signals(&mask, threads);
    omp_set_num_threads(threads);
    sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    restore_signals(&mask);
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* softmax + cross-entropy over rows of logits [rows, vocab], in place. bias [vocab] (may be NULL) is
 * added to every row first. Writes *total = sum_r loss_r, loss_r = logsumexp(row) - row[label[r]], also
 * written to loss[r] unless loss is NULL; each row becomes softmax - one_hot(label), the gradient of loss_r
 * with respect to it, and dbias (unless NULL) accumulates the column sums of those gradients.
 * Returns TP_BAD_LABEL (nothing written) when a label is outside [0, vocab). */
int xent_grad(float *logits, const int64_t *labels, const float *bias, float *loss, float *dbias, int64_t rows,
              int64_t vocab, int threads, double *total_out) {
    if (!labels_in_range(labels, rows, vocab)) return TP_BAD_LABEL;
    if (threads < 1) threads = 1;
    /* one column-sum row per thread, allocated before the parallel region where a failure can be returned */
    float *colsums = dbias ? calloc((size_t)threads * (size_t)vocab, sizeof(float)) : NULL;
    if (dbias && !colsums) return TP_NO_MEMORY;
    double total = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        float *colsum = colsums ? colsums + (size_t)omp_get_thread_num() * (size_t)vocab : NULL;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            float *x = logits + r * vocab;
            if (bias) {
#pragma omp simd
                for (int64_t j = 0; j < vocab; j++) x[j] += bias[j];
            }
            const float logit_y = x[labels[r]];
            float mx = x[0]; /* not -INFINITY: -ffast-math assumes finite values */
            for (int64_t j = 0; j < vocab; j++) mx = x[j] > mx ? x[j] : mx;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < vocab; j++) {
                float e = expf(x[j] - mx);
                x[j] = e;
                sum += e;
            }
            const float row_loss = logf(sum) + mx - logit_y;
            if (loss) loss[r] = row_loss;
            total += row_loss;
            const float inv = 1.0f / sum;
#pragma omp simd
            for (int64_t j = 0; j < vocab; j++) x[j] *= inv;
            x[labels[r]] -= 1.0f;
            if (colsum) {
#pragma omp simd
                for (int64_t j = 0; j < vocab; j++) colsum[j] += x[j];
            }
        }
    }
    if (colsums) { /* in thread order: the same sum every run */
        for (int t = 0; t < threads; t++)
            for (int64_t j = 0; j < vocab; j++) dbias[j] += colsums[(size_t)t * (size_t)vocab + j];
        free(colsums);
    }
    *total_out = total;
    return TP_OK;
}

/* The output layer and cross-entropy with their gradients, over n rows in chunks of `chunk` rows:
 * logits = h w + b (h [n, H], w [H, V] as nn.Linear's weight), loss as in xent_grad. Writes the summed
 * loss to *total_out and dh [n, H]; adds into dw [H, V] and db [V] (zero them first). scratch: [chunk, V]
 * floats. Returns TP_BAD_LABEL (nothing written) when a label is outside [0, V). */
static int linear_xent_unguarded(int64_t n, int64_t H, int64_t V, const float *h, const float *w, const float *b,
                const int64_t *labels, float *dh, float *dw, float *db, float *scratch, int64_t chunk, int threads,
                double *total_out) {
    if (!labels_in_range(labels, n, V)) return TP_BAD_LABEL;
    double total = 0.0;
    omp_set_num_threads(threads);
    for (int64_t s = 0; s < n; s += chunk) {
        const int r = (int)(n - s < chunk ? n - s : chunk);
        const float *hs = h + s * H;
        double part;
        sgemm(0, 0, r, V, H, 1.0f, hs, H, w, V, 0.0f, scratch, V);
        const int status = xent_grad(scratch, labels + s, b, NULL, db, r, V, threads, &part);
        if (status != TP_OK) return status;
        total += part;
        sgemm(0, 1, r, H, V, 1.0f, scratch, V, w, V, 0.0f, dh + s * H, H);
        sgemm(1, 0, H, V, r, 1.0f, hs, H, scratch, V, 1.0f, dw, V);
    }
    *total_out = total;
    return TP_OK;
}

/* LSTM recurrence from a zero state.
 * gates [T, B, 4H]: on entry x_t W_ih^T (no bias); on exit the activated gates (i, f, g, o).
 * w_hh [4H, H], bias [4H] (b_ih + b_hh). Writes h [T, B, H] and c [T, B, H]. */
static void lstm_forward_unguarded(int64_t T, int64_t B, int64_t H, float *gates, const float *w_hh,
                                   const float *bias, float *h, float *c, int threads) {
    const int64_t G = 4 * H;
    omp_set_num_threads(threads);
    for (int64_t t = 0; t < T; t++) {
        float *gt = gates + t * B * G;
        if (t > 0) /* gt += h_{t-1} W_hh^T */
            sgemm(0, 1, B, G, H, 1.0f, h + (t - 1) * B * H, H, w_hh, H, 1.0f, gt, G);
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t b = 0; b < B; b++) {
            float *g = gt + b * G;
            const float *cp = t > 0 ? c + ((t - 1) * B + b) * H : NULL;
            float *cn = c + (t * B + b) * H, *hn = h + (t * B + b) * H;
#pragma omp simd
            for (int64_t j = 0; j < H; j++) {
                float i = sigmoidf(g[j] + bias[j]);
                float f = sigmoidf(g[H + j] + bias[H + j]);
                float z = tanhf(g[2 * H + j] + bias[2 * H + j]);
                float o = sigmoidf(g[3 * H + j] + bias[3 * H + j]);
                float cv = i * z + (cp ? f * cp[j] : 0.0f);
                g[j] = i, g[H + j] = f, g[2 * H + j] = z, g[3 * H + j] = o;
                cn[j] = cv;
                hn[j] = o * tanhf(cv);
            }
        }
    }
}

/* The backward pass of lstm_forward. dout [T, B, H] is d loss / d h_t from above (overwritten as
 * scratch); gates and c are lstm_forward's. Writes dgates [T, B, 4H], the gradient with respect to the
 * pre-activations, from which the caller forms the weight, bias and input gradients as large products.
 * Returns TP_NO_MEMORY when its [B, H] scratch cannot be allocated. */
static int lstm_backward_unguarded(int64_t T, int64_t B, int64_t H, const float *gates, const float *c,
                                   const float *w_hh, float *dout, float *dgates, int threads) {
    const int64_t G = 4 * H;
    float *dc_next = calloc((size_t)B * (size_t)H, sizeof(float));
    if (!dc_next) return TP_NO_MEMORY;
    omp_set_num_threads(threads);
    for (int64_t t = T - 1; t >= 0; t--) {
        const float *gt = gates + t * B * G;
        float *dgt = dgates + t * B * G;
        float *dh = dout + t * B * H; /* dout[t] plus, after the product below, d h_t from step t + 1 */
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t b = 0; b < B; b++) {
            const float *g = gt + b * G;
            const float *cn = c + (t * B + b) * H;
            const float *cp = t > 0 ? c + ((t - 1) * B + b) * H : NULL;
            float *dg = dgt + b * G, *dhb = dh + b * H, *dcb = dc_next + b * H;
#pragma omp simd
            for (int64_t j = 0; j < H; j++) {
                float i = g[j], f = g[H + j], z = g[2 * H + j], o = g[3 * H + j];
                float tc = tanhf(cn[j]);
                float dc = dhb[j] * o * (1.0f - tc * tc) + dcb[j];
                dg[j] = dc * z * i * (1.0f - i);
                dg[H + j] = cp ? dc * cp[j] * f * (1.0f - f) : 0.0f;
                dg[2 * H + j] = dc * i * (1.0f - z * z);
                dg[3 * H + j] = dhb[j] * tc * o * (1.0f - o);
                dcb[j] = dc * f;
            }
        }
        if (t > 0) /* d h_{t-1} += dgates_t W_hh */
            sgemm(0, 0, B, H, G, 1.0f, dgt, G, w_hh, H, 1.0f, dout + (t - 1) * B * H, H);
    }
    free(dc_next);
    return TP_OK;
}

/* The entry points that run sgemm, each with signals blocked while it does (see block_signals). */
int linear_xent(int64_t n, int64_t H, int64_t V, const float *h, const float *w, const float *b, const int64_t *labels,
                float *dh, float *dw, float *db, float *scratch, int64_t chunk, int threads, double *total_out) {
    sigset_t mask;
    block_signals(&mask, threads);
    const int status = linear_xent_unguarded(n, H, V, h, w, b, labels, dh, dw, db, scratch, chunk, threads, total_out);
    restore_signals(&mask);
    return status;
}

void lstm_forward(int64_t T, int64_t B, int64_t H, float *gates, const float *w_hh, const float *bias, float *h,
                  float *c, int threads) {
    sigset_t mask;
    block_signals(&mask, threads);
    lstm_forward_unguarded(T, B, H, gates, w_hh, bias, h, c, threads);
    restore_signals(&mask);
}

int lstm_backward(int64_t T, int64_t B, int64_t H, const float *gates, const float *c, const float *w_hh,
                  float *dout, float *dgates, int threads) {
    sigset_t mask;
    block_signals(&mask, threads);
    const int status = lstm_backward_unguarded(T, B, H, gates, c, w_hh, dout, dgates, threads);
    restore_signals(&mask);
    return status;
}
