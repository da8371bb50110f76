package dogbreed.mms;

import com.amazonaws.ml.mms.archive.ModelException;
import com.amazonaws.ml.mms.http.BadRequestException;
import com.amazonaws.ml.mms.http.InferenceRequestHandler;
import com.amazonaws.ml.mms.http.ResourceNotFoundException;
import com.amazonaws.ml.mms.util.NettyUtils;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.util.Map;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;

/**
 * MMS's inference API, with the invocations of multi-model mode sent to the shared workers.
 *
 * <p>With shared workers ({@link SharedModels}), {@code POST /models/NAME/invoke} and {@code POST
 * /invocations?model_name=NAME} reach the model NAME that the platform loaded, through the shared
 * worker; {@code /invocations} without a name is 400, as in MMS with no default model, and MMS's
 * other prediction paths ({@code /predictions/NAME}, {@code /NAME/predict}) are 404: they would
 * name the shared model itself. Every other request, and every request in routing mode, is MMS's.
 */
public class GuardedInferenceHandler extends InferenceRequestHandler {

    public GuardedInferenceHandler(Map<String, ModelServerEndpoint> endpoints) {
        super(endpoints);
    }

    @Override
    protected void handleRequest(
            ChannelHandlerContext ctx,
            FullHttpRequest req,
            QueryStringDecoder decoder,
            String[] segments)
            throws ModelException {
        if (!SharedModels.enabled() || segments.length < 2) {
            super.handleRequest(ctx, req, decoder, segments);
            return;
        }
        if (segments.length == 4 && "models".equals(segments[1]) && "invoke".equals(segments[3])) {
            SharedModels.invoke(ctx, req, decoder, segments[2]);
        } else if (segments.length == 2 && "invocations".equals(segments[1])) {
            String name = NettyUtils.getParameter(decoder, "model_name", null);
            if (name == null || name.isEmpty()) {
                throw new BadRequestException("Parameter model_name is required.");
            }
            SharedModels.invoke(ctx, req, decoder, name);
        } else if ("predictions".equals(segments[1])
                || (segments.length == 3 && "predict".equals(segments[2]))) {
            throw new ResourceNotFoundException();
        } else {
            super.handleRequest(ctx, req, decoder, segments);
        }
    }
}
