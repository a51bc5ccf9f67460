/* A tiny C runtime for bare-metal programs on the virt board. */
#ifndef RUNTIME_H
#define RUNTIME_H
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

int putchar(int c);
int puts(const char *s);
int printf(const char *fmt, ...);
void exit(int status) __attribute__((noreturn));
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);

/* Called by trap_entry with the saved registers x1..x31 at frame[1..31];
 * returns the pc to resume at. The default prints the trap and fails. */
uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame);

#define read_csr(name) ({ uintptr_t v_; __asm__ volatile ("csrr %0, " #name : "=r"(v_)); v_; })
#define write_csr(name, v) __asm__ volatile ("csrw " #name ", %0" :: "r"((uintptr_t)(v)))

#endif
