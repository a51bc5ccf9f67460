/* The Goldfish RTC's alarm, as QEMU's hw/rtc/goldfish_rtc.c runs it: an
 * alarm a little ahead wakes the hart from WFI through the PLIC (source 11,
 * hart 0's M-mode context); an alarm already due fires at once, latching
 * its interrupt until CLEAR_INTERRUPT even while IRQ_ENABLED is 0; a
 * cleared alarm never fires; ALARM_HIGH alone does not arm. The output
 * names no time, as QEMU's RTC follows the host clock and hartvm's the
 * guest's. Interrupts stay globally off (mstatus.MIE = 0): WFI still wakes
 * for a pending enabled one, and the PLIC is claimed by hand. */
#include "runtime.h"

#define RTC 0x101000UL
#define TIME_LOW 0x00
#define TIME_HIGH 0x04
#define ALARM_LOW 0x08
#define ALARM_HIGH 0x0c
#define IRQ_ENABLED 0x10
#define CLEAR_ALARM 0x14
#define ALARM_STATUS 0x18
#define CLEAR_INTERRUPT 0x1c
#define RTC_REG(offset) (*(volatile uint32_t *)(RTC + (offset)))

#define RTC_IRQ 11
#define PLIC 0x0c000000UL
#define PLIC_PRIORITY(source) (*(volatile uint32_t *)(PLIC + 4 * (source)))
#define PLIC_PENDING (*(volatile uint32_t *)(PLIC + 0x1000))
#define PLIC_ENABLE0 (*(volatile uint32_t *)(PLIC + 0x2000))      /* hart 0, M-mode */
#define PLIC_THRESHOLD0 (*(volatile uint32_t *)(PLIC + 0x200000))
#define PLIC_CLAIM0 (*(volatile uint32_t *)(PLIC + 0x200004))

#define MTIMECMP0 (*(volatile uint64_t *)0x2004000UL)
#define MTIME (*(volatile uint64_t *)0x200bff8UL)
#define MIP_MTIP (1UL << 7)
#define MIP_MEIP (1UL << 11)

#define MS 1000000ULL                 /* nanoseconds */

static uint64_t rtc_now(void)
{
    uint64_t low = RTC_REG(TIME_LOW);            /* latches TIME_HIGH */
    return (uint64_t)RTC_REG(TIME_HIGH) << 32 | low;
}

static void set_alarm(uint64_t when)
{
    RTC_REG(ALARM_HIGH) = when >> 32;
    RTC_REG(ALARM_LOW) = (uint32_t)when;         /* arms it */
}

static int rtc_line_pending(void)
{
    return PLIC_PENDING >> RTC_IRQ & 1;
}

/* Sleep in WFI until the PLIC interrupts hart 0 or, with a timeout, until
 * the CLINT's timer says it is over; 1 if the PLIC did. */
static int wait_for_interrupt(uint64_t timeout_ticks)
{
    uintptr_t enable = MIP_MEIP;
    if (timeout_ticks) {
        MTIMECMP0 = MTIME + timeout_ticks;
        enable |= MIP_MTIP;
    }
    write_csr(mie, enable);
    while (!(read_csr(mip) & MIP_MEIP) && !(timeout_ticks && MTIME >= MTIMECMP0))
        __asm__ volatile ("wfi");
    write_csr(mie, 0);
    MTIMECMP0 = -1ULL;
    return read_csr(mip) & MIP_MEIP ? 1 : 0;
}

/* Claim, clear the RTC's interrupt, complete: the source claimed. */
static uint32_t serve(void)
{
    uint32_t source = PLIC_CLAIM0;
    RTC_REG(CLEAR_INTERRUPT) = 1;
    PLIC_CLAIM0 = source;
    return source;
}

int main(void)
{
    PLIC_PRIORITY(RTC_IRQ) = 1;
    PLIC_ENABLE0 = 1u << RTC_IRQ;
    PLIC_THRESHOLD0 = 0;
    printf("at reset: irq enabled %d, alarm status %d, alarm %x:%x\n", RTC_REG(IRQ_ENABLED),
           RTC_REG(ALARM_STATUS), RTC_REG(ALARM_HIGH), RTC_REG(ALARM_LOW));

    /* 1. An alarm 20 ms ahead; WFI with nothing else to wake the hart. */
    RTC_REG(IRQ_ENABLED) = 1;
    uint64_t alarm = rtc_now() + 20 * MS;
    set_alarm(alarm);
    printf("armed: alarm status %d, reads back %s\n", RTC_REG(ALARM_STATUS),
           ((uint64_t)RTC_REG(ALARM_HIGH) << 32 | RTC_REG(ALARM_LOW)) == alarm ? "yes" : "no");
    int woken = wait_for_interrupt(0);
    uint64_t now = rtc_now();
    printf("woken by the PLIC: %d, line pending %d, alarm status %d, time past the alarm: %s\n",
           woken, rtc_line_pending(), RTC_REG(ALARM_STATUS), now >= alarm ? "yes" : "no");
    printf("claimed source %d\n", serve());
    printf("after CLEAR_INTERRUPT: line pending %d, mip.MEIP %d\n", rtc_line_pending(),
           read_csr(mip) & MIP_MEIP ? 1 : 0);

    /* 2. An alarm already due, with the interrupt disabled: it fires at once
     * and its interrupt waits, latched, for IRQ_ENABLED. */
    RTC_REG(IRQ_ENABLED) = 0;
    set_alarm(rtc_now() - 1000 * MS);
    printf("past alarm, irq disabled: alarm status %d, line pending %d\n",
           RTC_REG(ALARM_STATUS), rtc_line_pending());
    RTC_REG(IRQ_ENABLED) = 1;
    int pending = rtc_line_pending();
    printf("irq enabled: line pending %d, claimed source %d\n", pending, serve());

    /* 3. A cleared alarm never fires (30 ms of waiting, by the CLINT). */
    set_alarm(rtc_now() + 10 * MS);
    RTC_REG(CLEAR_ALARM) = 1;
    printf("cleared: alarm status %d\n", RTC_REG(ALARM_STATUS));
    printf("woken by the PLIC within 30 ms: %d\n", wait_for_interrupt(300000));

    /* 4. ALARM_HIGH alone stores, but does not arm. */
    RTC_REG(ALARM_HIGH) = (rtc_now() + 10 * MS) >> 32;
    printf("ALARM_HIGH alone: alarm status %d\n", RTC_REG(ALARM_STATUS));

    /* 5. CLEAR_INTERRUPT while an alarm is armed leaves it armed; it fires later. */
    set_alarm(rtc_now() + 5 * MS);
    RTC_REG(CLEAR_INTERRUPT) = 1;
    printf("armed again: alarm status %d\n", RTC_REG(ALARM_STATUS));
    woken = wait_for_interrupt(10000000);        /* or give up after a second */
    printf("woken by the PLIC: %d, claimed source %d\n", woken, serve());
    return 0;
}
