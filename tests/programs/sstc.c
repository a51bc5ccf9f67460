/* Sstc (privileged spec, chapter "Sstc") from M- and S-mode: menvcfg.STCE,
 * stimecmp, who may use it (mcounteren.TM and STCE for S-mode), mip.STIP
 * driven by time >= stimecmp and closed to software writes, and a delegated
 * supervisor timer interrupt taken in S-mode. The output names no time:
 * QEMU's clock follows the host, hartvm's the instruction count. */
#include "runtime.h"

#define STCE (1UL << 63)
#define TM (1UL << 1)
#define STIP (1UL << 5)
#define STIMECMP "0x14d"

static volatile int illegal;          /* illegal-instruction traps from any mode */

/* Set by the S-mode timer handler (s_handler below). */
volatile uint64_t s_cause, s_on_time, s_sip, s_sip_after, s_fired;

void run_in_s(void (*fn)(void));      /* fn() in S-mode, back in M-mode after it */
extern char m_return[];

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    (void)frame;
    if (cause == 2) {                  /* skip it: every instruction here is 4 bytes */
        illegal++;
        return epc + 4;
    }
    if (cause == 9) {                  /* ecall from S-mode: run_in_s is over */
        __asm__ volatile ("li t0, 0x1800\n csrs mstatus, t0" ::: "t0");
        return (uintptr_t)m_return;
    }
    printf("unexpected trap: mcause %lx mepc %lx mtval %lx\n", cause, epc, tval);
    exit(1);
}

__asm__(
    "    .text\n"
    "    .globl run_in_s\n"
    "run_in_s:\n"
    "    addi sp, sp, -112\n"
    "    sd ra, 0(sp)\n"
    "    sd s0, 8(sp)\n  sd s1, 16(sp)\n sd s2, 24(sp)\n sd s3, 32(sp)\n"
    "    sd s4, 40(sp)\n sd s5, 48(sp)\n sd s6, 56(sp)\n sd s7, 64(sp)\n"
    "    sd s8, 72(sp)\n sd s9, 80(sp)\n sd s10, 88(sp)\n sd s11, 96(sp)\n"
    "    csrw mepc, a0\n"
    "    li t0, 0x1800\n"
    "    csrc mstatus, t0\n"
    "    li t0, 0x800\n"               /* MPP = S */
    "    csrs mstatus, t0\n"
    "    la ra, 1f\n"
    "    mret\n"
    "1:  ecall\n"                      /* fn returned: back to M-mode, at m_return */
    "    .globl m_return\n"
    "m_return:\n"
    "    ld ra, 0(sp)\n"
    "    ld s0, 8(sp)\n  ld s1, 16(sp)\n ld s2, 24(sp)\n ld s3, 32(sp)\n"
    "    ld s4, 40(sp)\n ld s5, 48(sp)\n ld s6, 56(sp)\n ld s7, 64(sp)\n"
    "    ld s8, 72(sp)\n ld s9, 80(sp)\n ld s10, 88(sp)\n ld s11, 96(sp)\n"
    "    addi sp, sp, 112\n"
    "    ret\n"
    /* The S-mode timer handler: what it saw, then stimecmp disarmed. */
    "    .align 2\n"
    "s_handler:\n"
    "    addi sp, sp, -16\n"
    "    sd t0, 0(sp)\n"
    "    sd t1, 8(sp)\n"
    "    csrr t0, scause\n"
    "    la t1, s_cause\n"
    "    sd t0, 0(t1)\n"
    "    rdtime t0\n"
    "    csrr t1, " STIMECMP "\n"
    "    sltu t0, t0, t1\n"
    "    xori t0, t0, 1\n"             /* time >= stimecmp */
    "    la t1, s_on_time\n"
    "    sd t0, 0(t1)\n"
    "    csrr t0, sip\n"
    "    la t1, s_sip\n"
    "    sd t0, 0(t1)\n"
    "    li t0, -1\n"
    "    csrw " STIMECMP ", t0\n"
    "    csrr t0, sip\n"
    "    la t1, s_sip_after\n"
    "    sd t0, 0(t1)\n"
    "    li t0, 1\n"
    "    la t1, s_fired\n"
    "    sd t0, 0(t1)\n"
    "    ld t0, 0(sp)\n"
    "    ld t1, 8(sp)\n"
    "    addi sp, sp, 16\n"
    "    sret\n");

extern char s_handler[];

static uint64_t read_stimecmp(void)
{
    uint64_t value = 0;
    __asm__ volatile ("csrr %0, " STIMECMP : "+r"(value));
    return value;
}

static void write_stimecmp(uint64_t value)
{
    __asm__ volatile ("csrw " STIMECMP ", %0" :: "r"(value));
}

static uint64_t read_time(void)
{
    uint64_t value;
    __asm__ volatile ("rdtime %0" : "=r"(value));
    return value;
}

static void s_access(void)
{
    write_stimecmp(0x5a5a);
    (void)read_stimecmp();
}

static void s_timer(void)
{
    write_csr(stvec, s_handler);
    write_stimecmp(read_time() + 1000);
    __asm__ volatile ("csrs sie, %0\n csrsi sstatus, 2" :: "r"(STIP));
    /* Spinning, not WFI: QEMU 7.2 now and then never wakes from this WFI
     * (hartvm's wake-up at stimecmp is tested in tests/cpu/test_sstc.py). */
    while (!s_fired)
        ;
    __asm__ volatile ("csrci sstatus, 2");
}

static void access_as_s(uintptr_t mcounteren, uintptr_t menvcfg)
{
    write_csr(mcounteren, mcounteren);
    write_csr(menvcfg, menvcfg);
    illegal = 0;
    run_in_s(s_access);
    printf("S-mode stimecmp with TM=%d STCE=%d: %d illegal\n", (int)(mcounteren >> 1 & 1),
           (int)(menvcfg >> 63), illegal);
}

int main(void)
{
    /* S-mode needs a PMP rule to run at all under QEMU: all of memory, RWX. */
    write_csr(pmpaddr0, -1UL >> 10);
    write_csr(pmpcfg0, 0x1f);

    write_csr(menvcfg, -1UL);
    printf("menvcfg FIOM and STCE after writing ones: %lx\n", read_csr(menvcfg) & (STCE | 1));
    write_csr(menvcfg, 0);
    write_stimecmp(0x123456789abc);
    printf("M-mode stimecmp with STCE=0: %lx\n", read_stimecmp());

    write_csr(menvcfg, STCE);
    write_stimecmp(0);
    printf("STIP with stimecmp in the past: %lx\n", read_csr(mip) & STIP);
    __asm__ volatile ("csrc mip, %0" :: "r"(STIP));
    printf("after clearing it by hand: %lx\n", read_csr(mip) & STIP);
    write_stimecmp(-1UL);
    printf("STIP with stimecmp far ahead: %lx\n", read_csr(mip) & STIP);
    __asm__ volatile ("csrs mip, %0" :: "r"(STIP));
    printf("after setting it by hand: %lx\n", read_csr(mip) & STIP);
    /* 0.1 s ahead: far enough for QEMU on a busy host to read mip before it */
    uint64_t deadline = read_time() + 1000000;
    write_stimecmp(deadline);
    printf("STIP before the deadline: %lx\n", read_csr(mip) & STIP);
    while (!(read_csr(mip) & STIP) && read_time() < deadline + 10000000)
        ;
    printf("STIP rose: %d, on time: %d\n", (read_csr(mip) & STIP) != 0, read_time() >= deadline);

    access_as_s(-1UL, STCE);
    access_as_s(TM, STCE);
    access_as_s(-1UL & ~TM, STCE);
    access_as_s(-1UL, 0);
    write_csr(mcounteren, -1UL);
    write_csr(menvcfg, STCE);
    printf("stimecmp S-mode wrote: %lx\n", read_stimecmp());

    write_stimecmp(-1UL);
    write_csr(mideleg, STIP);
    run_in_s(s_timer);
    printf("S-mode timer interrupt: scause %lx, on time %d, sip.STIP %lx then %lx\n",
           (unsigned long)s_cause, (int)s_on_time, (unsigned long)(s_sip & STIP),
           (unsigned long)(s_sip_after & STIP));
    return 0;
}
