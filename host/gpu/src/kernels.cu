// Flumen's GPU executor kernels: the ONNX operators that are not GEMMs.
// Compiled at run time with NVRTC (cached by source digest and GPU
// architecture); one thread per output element unless a kernel says
// otherwise. Shapes and strides come in small structs passed by value.

#define MAX_RANK 6
#define NEG_INF __int_as_float(0xff800000)

struct Bcast {
    long long n;
    int rank;
    long long dims[MAX_RANK];
    long long sa[MAX_RANK];
    long long sb[MAX_RANK];
};

__device__ __forceinline__ float apply(int op, float x, float z) {
    switch (op) {
        case 0: return x + z;
        case 1: return x - z;
        case 2: return x * z;
        case 3: return x / z;
        default: return powf(x, z);
    }
}

// y = a (op) b with numpy broadcasting: 0 add, 1 sub, 2 mul, 3 div, 4 pow.
// Index arithmetic in 32 bits when the tensor allows (64-bit division is
// many times slower on the GPU).
extern "C" __global__ void binary_f32(const float* a, const float* b, float* y, Bcast m, int op) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m.n) return;
    long long ia = 0, ib = 0;
    if (m.n < 2147483647LL) {
        unsigned int r = (unsigned int)i;
        for (int d = m.rank - 1; d >= 0; --d) {
            unsigned int dim = (unsigned int)m.dims[d];
            unsigned int c = r % dim;
            r /= dim;
            ia += (long long)c * m.sa[d];
            ib += (long long)c * m.sb[d];
        }
    } else {
        long long r = i;
        for (int d = m.rank - 1; d >= 0; --d) {
            long long c = r % m.dims[d];
            r /= m.dims[d];
            ia += c * m.sa[d];
            ib += c * m.sb[d];
        }
    }
    y[i] = apply(op, a[ia], b[ib]);
}

// The common broadcasts without per-dimension arithmetic. mode 0: same
// shapes; 1: b repeats every `inner` values of a (a bias row); 2: b is one
// value; 3: a is one value; 4: a repeats every `inner` values of b.
extern "C" __global__ void binary_simple_f32(const float* a, const float* b, float* y, long long n, long long inner,
                                             int mode, int op) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    long long j = n < 2147483647LL ? (long long)((unsigned int)i % (unsigned int)inner) : i % inner;
    float x, z;
    switch (mode) {
        case 0: x = a[i]; z = b[i]; break;
        case 1: x = a[i]; z = b[j]; break;
        case 2: x = a[i]; z = b[0]; break;
        case 3: x = a[0]; z = b[i]; break;
        default: x = a[j]; z = b[i]; break;
    }
    y[i] = apply(op, x, z);
}

// 0 relu, 1 erf, 2 sigmoid, 3 tanh, 4 sqrt, 5 exp, 6 neg, 7 reciprocal.
extern "C" __global__ void unary_f32(const float* x, float* y, long long n, int op) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    switch (op) {
        case 0: v = v > 0.0f ? v : 0.0f; break;
        case 1: v = erff(v); break;
        case 2: v = 1.0f / (1.0f + expf(-v)); break;
        case 3: v = tanhf(v); break;
        case 4: v = sqrtf(v); break;
        case 5: v = expf(v); break;
        case 6: v = -v; break;
        default: v = 1.0f / v; break;
    }
    y[i] = v;
}

// y[i] += bias[i % cols] (a GEMM's bias row).
extern "C" __global__ void add_bias_rows_f32(float* y, const float* bias, long long n, long long cols) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] += bias[n < 2147483647LL ? (long long)((unsigned int)i % (unsigned int)cols) : i % cols];
}

// Block-wide sum of one value per thread (blockDim.x a power of two ≤ 1024).
__device__ float block_sum(float v, float* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    float total = shared[0];
    __syncthreads();
    return total;
}

__device__ float block_max(float v, float* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + s]);
        __syncthreads();
    }
    float total = shared[0];
    __syncthreads();
    return total;
}

// Softmax over the last axis: one block per row.
extern "C" __global__ void softmax_rows_f32(const float* x, float* y, long long cols) {
    extern __shared__ float shared[];
    const float* row = x + blockIdx.x * cols;
    float* out = y + blockIdx.x * cols;
    float m = NEG_INF;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, shared);
    float s = 0.0f;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) s += expf(row[j] - m);
    s = block_sum(s, shared);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) out[j] = expf(row[j] - m) / s;
}

// LayerNormalization over the last axis: one block per row.
extern "C" __global__ void layernorm_rows_f32(const float* x, const float* gamma, const float* beta, float* y,
                                              long long cols, float eps, int has_beta) {
    extern __shared__ float shared[];
    const float* row = x + blockIdx.x * cols;
    float* out = y + blockIdx.x * cols;
    float s = 0.0f;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) s += row[j];
    float mean = block_sum(s, shared) / (float)cols;
    float v = 0.0f;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        float d = row[j] - mean;
        v += d * d;
    }
    float inv = rsqrtf(block_sum(v, shared) / (float)cols + eps);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        float o = (row[j] - mean) * inv * gamma[j];
        out[j] = has_beta ? o + beta[j] : o;
    }
}

// Rows of `table` picked by `idx` (Gather on axis 0). An index out of range
// sets *err and writes zeros: the executor turns that into an error.
extern "C" __global__ void gather_rows_f32(const float* table, const long long* idx, float* y, long long n,
                                           long long row, long long rows, int* err) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    long long k = idx[i / row];
    if (k < 0) k += rows;
    if (k < 0 || k >= rows) {
        atomicExch(err, 1);
        y[i] = 0.0f;
        return;
    }
    y[i] = table[k * row + i % row];
}

extern "C" __global__ void cast_i64_f32(const long long* x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = (float)x[i];
}

struct Perm {
    long long n;
    int rank;
    long long dims[MAX_RANK];     // output dimensions
    long long strides[MAX_RANK];  // input stride of each output dimension
};

extern "C" __global__ void transpose_f32(const float* x, float* y, Perm m) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m.n) return;
    long long off = 0;
    if (m.n < 2147483647LL) {
        unsigned int r = (unsigned int)i;
        for (int d = m.rank - 1; d >= 0; --d) {
            unsigned int dim = (unsigned int)m.dims[d];
            off += (long long)(r % dim) * m.strides[d];
            r /= dim;
        }
    } else {
        long long r = i;
        for (int d = m.rank - 1; d >= 0; --d) {
            off += (r % m.dims[d]) * m.strides[d];
            r /= m.dims[d];
        }
    }
    y[i] = x[off];
}

struct Conv {
    int n, c, h, w;        // input
    int kh, kw;            // kernel
    int sh, sw, ph, pw;    // strides, leading pads
    int dh, dw;            // dilations
    int oh, ow;            // output
};

// col[(ci * kh + ki) * kw + kj][img * oh * ow + p]: the patches of every
// image side by side, so one GEMM convolves the whole batch.
extern "C" __global__ void im2col_f32(const float* x, float* col, Conv m) {
    long long p_all = (long long)m.n * m.oh * m.ow;
    long long total = (long long)m.c * m.kh * m.kw * p_all;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    long long q = i % p_all;
    long long k = i / p_all;
    int kj = k % m.kw;
    int ki = (k / m.kw) % m.kh;
    int ci = k / (m.kw * m.kh);
    int img = q / (m.oh * m.ow);
    int p = q % (m.oh * m.ow);
    int oy = p / m.ow, ox = p % m.ow;
    int iy = oy * m.sh - m.ph + ki * m.dh;
    int ix = ox * m.sw - m.pw + kj * m.dw;
    float v = 0.0f;
    if (iy >= 0 && iy < m.h && ix >= 0 && ix < m.w) v = x[(((long long)img * m.c + ci) * m.h + iy) * m.w + ix];
    col[i] = v;
}

// y[img][oc][p] = yp[oc][img * P + p] + bias[oc], then ReLU when relu != 0.
extern "C" __global__ void conv_out_f32(const float* yp, const float* bias, float* y, int n, int oc, long long p,
                                        int relu) {
    long long total = (long long)n * oc * p;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    long long q = i % p;
    int o = (i / p) % oc;
    int img = i / (p * oc);
    float v = yp[(long long)o * n * p + (long long)img * p + q] + bias[o];
    y[i] = relu && v < 0.0f ? 0.0f : v;
}

// y = x * scale[c] + shift[c] over [n, c, rest] (an unfolded BatchNormalization).
extern "C" __global__ void channel_affine_f32(const float* x, const float* scale, const float* shift, float* y,
                                              long long n, int c, long long rest) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int ch = (i / rest) % c;
    y[i] = x[i] * scale[ch] + shift[ch];
}

extern "C" __global__ void maxpool_f32(const float* x, float* y, Conv m) {
    long long total = (long long)m.n * m.c * m.oh * m.ow;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int ox = i % m.ow;
    int oy = (i / m.ow) % m.oh;
    long long plane = i / ((long long)m.ow * m.oh);
    const float* src = x + plane * m.h * m.w;
    float best = NEG_INF;
    for (int ki = 0; ki < m.kh; ++ki) {
        int iy = oy * m.sh - m.ph + ki * m.dh;
        if (iy < 0 || iy >= m.h) continue;
        for (int kj = 0; kj < m.kw; ++kj) {
            int ix = ox * m.sw - m.pw + kj * m.dw;
            if (ix < 0 || ix >= m.w) continue;
            best = fmaxf(best, src[iy * m.w + ix]);
        }
    }
    y[i] = best;
}

// Mean of each [h * w] plane: one warp per plane.
extern "C" __global__ void plane_mean_f32(const float* x, float* y, long long planes, long long hw) {
    long long plane = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (plane >= planes) return;
    const float* src = x + plane * hw;
    float s = 0.0f;
    for (long long j = lane; j < hw; j += 32) s += src[j];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffff, s, o);
    if (lane == 0) y[plane] = s / (float)hw;
}

// In place over NCHW: y += bias[channel], then ReLU when relu != 0 (after a
// cuDNN convolution).
extern "C" __global__ void bias_act_nchw_f32(float* y, const float* bias, long long n, int c, long long plane,
                                             int relu) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = y[i] + bias[(i / plane) % c];
    y[i] = relu && v < 0.0f ? 0.0f : v;
}
