/* Exit status through the test finisher: the status of a failing program. */
#include "runtime.h"

int main(void)
{
    printf("failing on purpose\n");
    return 42;
}
