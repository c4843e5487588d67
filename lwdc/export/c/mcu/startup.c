/* Bare-metal start-up for running lwdc's generated C on QEMU's MPS2 boards (Cortex-M) in tests and benchmarks.
 * Not part of any generated library: a firmware has its own start-up code and calls NAME_run() itself.
 *
 * Reset: copy .data from flash, zero .bss, enable the FPU where there is one, open the semihosting console and
 * files (newlib's librdimon), read the command line QEMU was given (-semihosting-config arg=...) into argv, run
 * main(); a non-zero status or a fault ends QEMU with exit status 1 (semihosting SYS_EXIT, reason other than
 * "application exit"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern uint32_t __data_load, __data_start, __data_end, __bss_start__, __bss_end__, __stack_top;
extern int main(int argc, char **argv);
extern void initialise_monitor_handles(void);

#define SYS_GET_CMDLINE 0x15
#define SYS_EXIT 0x18
#define ADP_STOPPED_RUN_TIME_ERROR 0x20023

static int semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void fail_exit(void)
{
    semihost(SYS_EXIT, (void *)ADP_STOPPED_RUN_TIME_ERROR);
    for (;;) {
    }
}

void _init(void);
void _fini(void);
void _init(void) {}
void _fini(void) {}

static char cmdline[2048];
static char *args[32];

void reset_handler(void);
void fault_handler(void);

void fault_handler(void)
{
    fail_exit();
}

void reset_handler(void)
{
    uint32_t *src = &__data_load, *dst = &__data_start;
    struct { char *buf; int len; } block;
    char *p = cmdline;
    int argc = 0, status;
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10 and CP11 full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    initialise_monitor_handles();
    block.buf = cmdline;
    block.len = (int)sizeof cmdline - 1;
    if (semihost(SYS_GET_CMDLINE, &block) == 0) {
        while (*p && argc < 31) {
            while (*p == ' ') *p++ = 0;
            if (*p) args[argc++] = p;
            while (*p && *p != ' ') ++p;
        }
    }
    args[argc] = 0;
    status = main(argc, args);
    fflush(NULL);
    if (status != 0) fail_exit();
    exit(0);
}

/* Initial stack pointer, reset, then every exception up to SysTick to the fault handler. */
__attribute__((section(".vectors"), used)) static const uintptr_t vectors[16] = {
    (uintptr_t)&__stack_top, (uintptr_t)reset_handler,
    (uintptr_t)fault_handler, (uintptr_t)fault_handler, (uintptr_t)fault_handler, (uintptr_t)fault_handler,
    (uintptr_t)fault_handler, 0, 0, 0, 0,
    (uintptr_t)fault_handler, (uintptr_t)fault_handler, 0,
    (uintptr_t)fault_handler, (uintptr_t)fault_handler};
