/* The runtime: UART output, printf, exit through the test finisher, string helpers. */
#include "runtime.h"

#define UART0 ((volatile uint8_t *)0x10000000)
#define UART_LSR 5
#define UART_LSR_THRE 0x20
#define FINISHER ((volatile uint32_t *)0x100000)

int putchar(int c)
{
    while (!(UART0[UART_LSR] & UART_LSR_THRE))
        ;
    UART0[0] = (uint8_t)c;
    return c;
}

int puts(const char *s)
{
    while (*s)
        putchar(*s++);
    putchar('\n');
    return 0;
}

void exit(int status)
{
    *FINISHER = status == 0 ? 0x5555 : ((uint32_t)status << 16) | 0x3333;
    for (;;)
        __asm__ volatile ("wfi");
}

static void print_unsigned(unsigned long long value, unsigned base, int width, char pad, int upper)
{
    char digits[32];
    int n = 0;
    do {
        unsigned d = value % base;
        digits[n++] = d < 10 ? '0' + d : (upper ? 'A' : 'a') + d - 10;
        value /= base;
    } while (value);
    while (width-- > n)
        putchar(pad);
    while (n)
        putchar(digits[--n]);
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            putchar(*fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, longs = 0;
        if (*fmt == '0')
            pad = '0', fmt++;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l')
            longs++, fmt++;
        switch (*fmt) {
        case 'd': {
            long long v = longs ? va_arg(ap, long long) : va_arg(ap, int);
            if (v < 0) {
                putchar('-');
                if (width)
                    width--;
                print_unsigned(-(unsigned long long)v, 10, width, pad, 0);
            } else {
                print_unsigned(v, 10, width, pad, 0);
            }
            break;
        }
        case 'u':
            print_unsigned(longs ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned), 10, width, pad, 0);
            break;
        case 'x':
        case 'X':
            print_unsigned(longs ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned), 16, width, pad, *fmt == 'X');
            break;
        case 'p':
            print_unsigned((uintptr_t)va_arg(ap, void *), 16, 16, '0', 0);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            while (*s)
                putchar(*s++);
            break;
        }
        case 'c':
            putchar(va_arg(ap, int));
            break;
        case '%':
            putchar('%');
            break;
        default:
            putchar('%');
            putchar(*fmt);
        }
    }
    va_end(ap);
    return 0;
}

__attribute__((weak)) uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    (void)frame;
    printf("unexpected trap: mcause %lx mepc %lx mtval %lx\n", cause, epc, tval);
    exit(99);
}

void *memcpy(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    if (d < s)
        while (n--)
            *d++ = *s++;
    else
        while (n--)
            d[n] = s[n];
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    uint8_t *d = dst;
    while (n--)
        *d++ = (uint8_t)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}
