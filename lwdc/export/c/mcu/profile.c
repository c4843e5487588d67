/* Instruction counter for lwdc's generated C on QEMU's MPS2 boards (lwdc profile --target), a replacement for the
 * example main.c. Build NAME.c with -DLW_PROFILE_MARK(n)=lw_profile_mark(n) and this file with LW_HEADER,
 * LW_INPUT_SIZE, LW_OUTPUT_SIZE, LW_NODES and LW_RUN (NAME_run, or NAME_run_int8 with LW_INT8).
 *
 * Method: QEMU runs with -icount shift=0, so every executed instruction advances virtual time by 1 ns; SysTick,
 * clocked at the board's 25 MHz, then counts down one tick per 40 instructions, identically from run to run. The
 * counter is read after every node of the second inference (the first one warms up: e.g. start-up weight
 * decoding); the output is one line "node ticks" per node and "total ticks".
 *
 * Stack: before the second inference the 64 KiB below the current stack pointer are painted with a pattern; the
 * deepest word no longer holding it afterwards gives the inference's stack depth, printed as "stack bytes". */
#include <stdint.h>
#include <stdio.h>
#include LW_HEADER

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

#ifdef LW_INT8
typedef int8_t sample_t;
#else
typedef float sample_t;
#endif

static uint32_t marks[LW_NODES + 1];
static int recording;

#define STACK_PAINT_WORDS 16384u
#define STACK_PATTERN 0xA5C3E1F7u

/* Paint the stack below the caller's frame (leaving 64 bytes for this call); returns where the paint ends. */
static __attribute__((noinline)) uint32_t *paint_stack(void)
{
    uint32_t *sp, *p;
    uint32_t i;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    p = sp - 16;
    for (i = 0; i < STACK_PAINT_WORDS; ++i) *--p = STACK_PATTERN;
    return sp - 16;
}

static uint32_t stack_used(const uint32_t *top)
{
    const uint32_t *p = top - STACK_PAINT_WORDS;
    while (p < top && *p == STACK_PATTERN) ++p;
    return (uint32_t)((const char *)top - (const char *)p);
}

void lw_profile_mark(int node);
void lw_profile_mark(int node)
{
    if (recording) marks[node + 1] = SYST_CVR;
}

int main(int argc, char **argv)
{
    static sample_t x[LW_INPUT_SIZE], y[LW_OUTPUT_SIZE];
    uint32_t total = 0, stack;
    uint32_t *painted;
    int i;
    if (argc > 1) {
        FILE *in = fopen(argv[1], "rb");
        if (!in || fread(x, sizeof(sample_t), LW_INPUT_SIZE, in) != LW_INPUT_SIZE) {
            fprintf(stderr, "cannot read one sample from %s\n", argv[1]);
            return 1;
        }
        fclose(in);
    }
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5u; /* enabled, processor clock, no interrupt */
    LW_RUN(x, y);
    painted = paint_stack();
    recording = 1;
    marks[0] = SYST_CVR;
    LW_RUN(x, y);
    recording = 0;
    stack = stack_used(painted);
    for (i = 0; i < LW_NODES; ++i) {
        uint32_t ticks = (marks[i] - marks[i + 1]) & 0xFFFFFFu; /* counts down; one wrap at most per node */
        total += ticks;
        printf("%d %lu\n", i, (unsigned long)ticks);
    }
    printf("total %lu\n", (unsigned long)total);
    printf("stack %lu\n", (unsigned long)stack);
    return 0;
}
