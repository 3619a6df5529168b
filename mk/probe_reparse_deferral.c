/* Build-time probe (mk/expat.mk): does this expat have
 * XML_SetReparseDeferralEnabled? Expat 2.6.0 added it, and Debian
 * backported it into 2.5.0-1+deb12u2; bookworm's 2.5.0-1+deb12u1 has
 * neither the function nor the deferral it turns off. */
#include <expat.h>

int main(void) {
    XML_Parser p = XML_ParserCreate(NULL);
    XML_SetReparseDeferralEnabled(p, XML_FALSE);
    XML_ParserFree(p);
    return 0;
}
