#include <aemp.h>
#include <stdio.h>

static void on_msg(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                   void *arg)
{
    char text[256];
    (void)node;
    (void)self;
    (void)from;
    (void)arg;
    aemp_term_print(msg, text, sizeof text);
    printf("got %s\n", text);
    fflush(stdout); /* stdout may be a file or a pipe: show each line now */
}

int main(void)
{
    uv_loop_t *loop = uv_default_loop();
    aemp_node_config cfg = {.name = "cnode", .cookie = "secret"};
    aemp_node *node;
    aemp_port port;
    if (aemp_node_create(loop, &cfg, &node) || aemp_port_open(node, on_msg, NULL, &port) ||
        aemp_register(node, "inbox", port))
        return 1;
    return uv_run(loop, UV_RUN_DEFAULT);
}
