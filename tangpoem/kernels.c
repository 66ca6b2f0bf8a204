/* CPU kernels for the training step (see tangpoem/native.py, which compiles and loads this file).
 *
 * Paddle's CPU elementwise kernels run on one thread and one op at a time; these fuse the LSTM cell
 * and the softmax + cross-entropy into single passes on all threads (OpenMP from Paddle's own
 * libiomp5, the runtime MKL uses, so the two never fight over the cores). Matrix products go to
 * MKL's cblas_sgemm, the library Paddle's matmul calls.
 *
 * Layouts are row-major float32. Gate order is Paddle's nn.LSTM one: i, f, g (cell candidate), o.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the cblas interface, declared here so no MKL header is needed */
enum { RowMajor = 101, NoTrans = 111, Trans = 112, Packed = 151, BMatrix = 162 };
void cblas_sgemm(int layout, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
/* MKL's packed GEMM: a weight used by every time step is laid out for the kernel once, not per product */
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k);
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float *src,
                      int ld, float *dest);
void cblas_sgemm_compute(int layout, int ta, int tb, int m, int n, int k, const float *a, int lda, const float *b,
                         int ldb, float beta, float *c, int ldc);

/* w (trans: w^T) as the B operand of m x n x k products, packed; free() it after use */
static float *pack_b(int trans, int m, int n, int k, const float *w, int ld) {
    float *packed = malloc(cblas_sgemm_pack_get_size(BMatrix, m, n, k));
    cblas_sgemm_pack(RowMajor, BMatrix, trans, m, n, k, 1.0f, w, ld, packed);
    return packed;
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* softmax + cross-entropy over rows of logits [rows, vocab], in place. bias [vocab] (may be NULL) is
 * added to every row first. Returns sum_r loss_r, loss_r = logsumexp(row) - row[label[r]], also written
 * to loss[r] unless loss is NULL; each row becomes softmax - one_hot(label), the gradient of loss_r with
 * respect to it, and dbias (unless NULL) accumulates the column sums of those gradients. */
double xent_grad(float *logits, const int64_t *labels, const float *bias, float *loss, float *dbias, int64_t rows,
                 int64_t vocab, int threads) {
    double total = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        float *colsum = dbias ? calloc((size_t)vocab, sizeof(float)) : NULL;
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
        if (colsum) {
#pragma omp critical
            for (int64_t j = 0; j < vocab; j++) dbias[j] += colsum[j];
            free(colsum);
        }
    }
    return total;
}

/* The output layer and cross-entropy with their gradients, over n rows in chunks of `chunk` rows:
 * logits = h w + b (h [n, H], w [H, V] as nn.Linear's weight), loss as in xent_grad. Returns the summed
 * loss; writes dh [n, H]; adds into dw [H, V] and db [V] (zero them first). scratch: [chunk, V] floats. */
double linear_xent(int64_t n, int64_t H, int64_t V, const float *h, const float *w, const float *b,
                   const int64_t *labels, float *dh, float *dw, float *db, float *scratch, int64_t chunk, int threads) {
    double total = 0.0;
    for (int64_t s = 0; s < n; s += chunk) {
        const int r = (int)(n - s < chunk ? n - s : chunk);
        const float *hs = h + s * H;
        cblas_sgemm(RowMajor, NoTrans, NoTrans, r, (int)V, (int)H, 1.0f, hs, (int)H, w, (int)V, 0.0f, scratch, (int)V);
        total += xent_grad(scratch, labels + s, b, NULL, db, r, V, threads);
        cblas_sgemm(RowMajor, NoTrans, Trans, r, (int)H, (int)V, 1.0f, scratch, (int)V, w, (int)V, 0.0f, dh + s * H,
                    (int)H);
        cblas_sgemm(RowMajor, Trans, NoTrans, (int)H, (int)V, r, 1.0f, hs, (int)H, scratch, (int)V, 1.0f, dw, (int)V);
    }
    return total;
}

/* LSTM recurrence from a zero state.
 * gates [T, B, 4H]: on entry x_t W_ih^T (no bias); on exit the activated gates (i, f, g, o).
 * w_hh [4H, H], bias [4H] (b_ih + b_hh). Writes h [T, B, H] and c [T, B, H]. */
void lstm_forward(int64_t T, int64_t B, int64_t H, float *gates, const float *w_hh, const float *bias, float *h,
                  float *c, int threads) {
    const int64_t G = 4 * H;
    float *w_packed = pack_b(Trans, (int)B, (int)G, (int)H, w_hh, (int)H);
    for (int64_t t = 0; t < T; t++) {
        float *gt = gates + t * B * G;
        if (t > 0) /* gt += h_{t-1} W_hh^T */
            cblas_sgemm_compute(RowMajor, NoTrans, Packed, (int)B, (int)G, (int)H, h + (t - 1) * B * H, (int)H,
                                w_packed, (int)H, 1.0f, gt, (int)G);
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
    free(w_packed);
}

/* The backward pass of lstm_forward. dout [T, B, H] is d loss / d h_t from above (overwritten as
 * scratch); gates and c are lstm_forward's. Writes dgates [T, B, 4H], the gradient with respect to the
 * pre-activations, from which the caller forms the weight, bias and input gradients as large products. */
void lstm_backward(int64_t T, int64_t B, int64_t H, const float *gates, const float *c, const float *w_hh,
                   float *dout, float *dgates, int threads) {
    const int64_t G = 4 * H;
    float *dc_next = calloc((size_t)(B * H), sizeof(float));
    float *w_packed = pack_b(NoTrans, (int)B, (int)H, (int)G, w_hh, (int)H);
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
            cblas_sgemm_compute(RowMajor, NoTrans, Packed, (int)B, (int)H, (int)G, dgt, (int)G, w_packed, (int)H,
                                1.0f, dout + (t - 1) * B * H, (int)H);
    }
    free(w_packed);
    free(dc_next);
}
